"""Record inferred shapes in value_info, so that later passes (and readers of the graph) see them."""

from __future__ import annotations

import onnx


def run(model: onnx.ModelProto) -> bool:
    before = len(model.graph.value_info)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001  (a graph onnx cannot infer is still a graph we can optimise)
        return False
    if len(inferred.graph.value_info) == before:
        return False
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    return True
