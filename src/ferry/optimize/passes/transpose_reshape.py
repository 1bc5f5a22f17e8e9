"""Cancel Transpose pairs that compose to the identity (or merge them into one), and collapse a Reshape
that only feeds another Reshape."""

from __future__ import annotations

import onnx
from onnx import helper

from ferry.optimize.ir import Index, attr, exhaust, remove, rename_input, replace


def _pairs(graph: onnx.GraphProto, op: str):
    """(first, second, index) for each `op` node whose output feeds only another `op` node, as data."""
    for first in list(graph.node):
        if first.op_type != op:
            continue
        index = Index(graph)
        second = index.sole_consumer(first.output[0])
        if second is not None and second.op_type == op and second.input[0] == first.output[0]:
            yield first, second, index


def _transposes(model: onnx.ModelProto) -> bool:
    graph = model.graph
    for first, second, index in _pairs(graph, "Transpose"):
        p1, p2 = attr(first, "perm"), attr(second, "perm")
        if p1 is None or p2 is None:
            continue
        composed = [p1[i] for i in p2]
        if composed == list(range(len(composed))):
            out = second.output[0]
            if out in index.outputs or out in index.captured:
                continue
            rename_input(graph, out, first.input[0])
            remove(graph, [first, second])
        else:
            merged = helper.make_node("Transpose", [first.input[0]], [second.output[0]], perm=composed,
                                      name=(first.name or second.output[0]) + "_merged")  # fmt: skip
            replace(graph, [first, second], merged, where=first)
        return True
    return False


def _reshapes(model: onnx.ModelProto) -> bool:
    graph = model.graph
    for first, second, index in _pairs(graph, "Reshape"):
        shape = index.const(second.input[1])
        if shape is None or (shape == 0).any():
            continue  # a 0 copies a dimension from the first reshape's output, which would change
        second.input[0] = first.input[0]
        remove(graph, [first])
        return True
    return False


def run(model: onnx.ModelProto) -> bool:
    return exhaust(lambda m: _transposes(m) or _reshapes(m), model)
