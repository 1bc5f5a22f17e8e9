"""The `shape_inference` pass (`ferry/optimize/passes/shape_inference.py`): what the pass manager runs for
the passes that need shapes."""

from __future__ import annotations

from onnx import helper

from ferry.optimize.ir import shapes
from ferry.optimize.passes import shape_inference
from optimize_helpers import model_of


def test_inferred_shapes_are_recorded_and_stale_ones_replaced():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Transpose", ["a"], ["y"], perm=[1, 0])]
    model = model_of(nodes, [("x", [2, 5])], ["y"])
    del model.graph.value_info[:]
    model.graph.value_info.append(helper.make_tensor_value_info("gone", 1, [7]))  # a value no node makes now
    result = shape_inference.run(model)
    assert result.changed
    known = shapes(model)
    assert known["a"] == [2, 5] and known["y"] == [5, 2] and "gone" not in known
