"""Remove Identity nodes, and Dropout nodes whose mask nobody reads (at inference Dropout passes x through)."""

from __future__ import annotations

import onnx

from ferry.optimize.ir import Index
from ferry.optimize.manager import PassResult


def _passthrough(node: onnx.NodeProto, index: Index) -> bool:
    if node.op_type == "Identity":
        return True
    if node.op_type == "Dropout":
        training = node.input[2] if len(node.input) > 2 else ""
        return not training and not (len(node.output) > 1 and node.output[1] and index.used(node.output[1]))
    return False


def run(model: onnx.ModelProto) -> PassResult:
    index = Index(model.graph)
    removed = 0
    for node in list(model.graph.node):
        if not _passthrough(node, index):
            continue
        src, dst = node.input[0], node.output[0]
        if dst in index.captured:
            continue
        if dst not in index.outputs:
            index.rename_input(dst, src)
        else:
            producer = index.producer.get(src)
            if producer is None or index.sole_consumer(src) is not node:
                continue  # a graph input or shared tensor feeds a graph output: keep the copy
            index.remove([node])
            index.set_output(producer, list(producer.output).index(src), dst)
            removed += 1
            continue
        index.remove([node])
        removed += 1
    return PassResult(model, {"removed": removed})
