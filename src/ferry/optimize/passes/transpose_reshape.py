"""Cancel Transpose pairs that compose to the identity (or merge them into one), and collapse a Reshape
that only feeds another Reshape."""

from __future__ import annotations

import onnx
from onnx import helper

from ferry.optimize.ir import Index, attr
from ferry.optimize.manager import PassResult


def _pairs(index: Index, op: str):
    """(first, second) for each `op` node whose output feeds only another `op` node, as data."""
    for first in list(index.graph.node):
        if not index.alive(first) or first.op_type != op:
            continue
        second = index.sole_consumer(first.output[0])
        if second is not None and second.op_type == op and second.input[0] == first.output[0]:
            yield first, second


def _transposes(index: Index) -> int:
    count = 0
    for first, second in _pairs(index, "Transpose"):
        p1, p2 = attr(first, "perm"), attr(second, "perm")
        if p1 is None or p2 is None:
            continue
        composed = [p1[i] for i in p2]
        if composed == list(range(len(composed))):
            out = second.output[0]
            if out in index.outputs or out in index.captured:
                continue
            index.rename_input(out, first.input[0])
            index.remove([first, second])
        else:
            merged = helper.make_node("Transpose", [first.input[0]], [second.output[0]], perm=composed,
                                      name=(first.name or second.output[0]) + "_merged")  # fmt: skip
            index.replace([first, second], merged, where=first)
        count += 1
    return count


def _reshapes(index: Index) -> int:
    count = 0
    for first, second in _pairs(index, "Reshape"):
        shape = index.const(second.input[1])
        if shape is None or (shape == 0).any():
            continue  # a 0 copies a dimension from the first reshape's output, which would change
        index.set_input(second, 0, first.input[0])
        index.remove([first])
        count += 1
    return count


def run(model: onnx.ModelProto) -> PassResult:
    index = Index(model.graph)
    return PassResult(model, {"transposes": _transposes(index), "reshapes": _reshapes(index)})
