"""The `reshape_dims` pass (`ferry/optimize/passes/reshape_dims.py`), checked in ONNX Runtime."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ferry.optimize.passes import (
    dead_code,
    reshape_dims,
    shape_inference,
)
from optimize_helpers import apply, const, model_of, run_ort, x


def reshape_by_shape_of(source: str, dims: list[int], x_shape: list) -> onnx.ModelProto:
    """y = Reshape(x @ w, [those dims of `source`, 2, 4]), the dims read at run time as torch.onnx exports."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Shape", [source], ["s"])]
    inits = [const("w", x(8, 8)), numpy_helper.from_array(np.array([2, 4], np.int64), "tail"),
             numpy_helper.from_array(np.array([0], np.int64), "axes")]  # fmt: skip
    for j, k in enumerate(dims):
        inits.append(numpy_helper.from_array(np.array(k, np.int64), f"k{j}"))
        nodes += [helper.make_node("Gather", ["s", f"k{j}"], [f"g{j}"], axis=0),
                  helper.make_node("Unsqueeze", [f"g{j}", "axes"], [f"u{j}"])]  # fmt: skip
    pieces = [f"u{j}" for j in range(len(dims))] + ["tail"]
    nodes += [
        helper.make_node("Concat", pieces, ["target"], axis=0),
        helper.make_node("Reshape", ["h", "target"], ["y"]),
    ]
    model = model_of(nodes, [("x", x_shape)], ["y"], inits)
    shape_inference.run(model)
    return model


@pytest.mark.parametrize(
    ("source", "dims", "x_shape", "target"),
    [
        ("x", [0, 1], ["N", "S", 8], [0, 0, 2, 4]),  # the batch and sequence symbols flow from x to x @ w
        ("h", [0, 1], ["N", "S", 8], [0, 0, 2, 4]),  # the Reshape's own input
        ("x", [0, 1], [3, "S", 8], [3, 0, 2, 4]),  # a dimension known as a number is that number
    ],
)
def test_reshape_target_from_shapes_becomes_a_constant(source, dims, x_shape, target):
    model = reshape_by_shape_of(source, dims, x_shape)
    feeds = {"x": x(3, 5, 8)}
    out, _ = apply(reshape_dims.run, model, feeds)
    reshape = next(n for n in out.graph.node if n.op_type == "Reshape")
    assert list(numpy_helper.to_array(next(t for t in out.graph.initializer if t.name == reshape.input[1]))) == target
    dead_code.run(out)
    assert Counter(n.op_type for n in out.graph.node) == {"MatMul": 1, "Reshape": 1}  # the chain is gone
    if x_shape[0] == "N":  # other batch and sequence sizes still agree
        other = {"x": x(2, 7, 8)}
        np.testing.assert_allclose(run_ort(out, other)[0], run_ort(model, other)[0], atol=1e-5)


def test_reshape_target_is_left_alone_when_dims_may_differ():
    """Swapped dims, [S, N, ...], are not "keep dimension j": position 0 would copy N, not S."""
    for source in ("x", "h"):
        model = reshape_by_shape_of(source, [1, 0], ["N", "S", 8])
        assert not reshape_dims.run(model).changed


@pytest.mark.parametrize(("k", "folds"), [(-1, True), (2, True), (0, False)])
def test_a_dimension_read_from_a_shape_becomes_a_constant_when_known(k, folds):
    """y = x / sqrt(dimension k of x): the scale torch.onnx computes at run time from the head size."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "k"], ["d"], axis=0),
        helper.make_node("Cast", ["d"], ["df"], to=TensorProto.FLOAT),
        helper.make_node("Sqrt", ["df"], ["root"]),
        helper.make_node("Div", ["x", "root"], ["y"]),
    ]
    model = model_of(nodes, [("x", ["N", 3, 8])], ["y"], [numpy_helper.from_array(np.array(k, np.int64), "k")])
    shape_inference.run(model)
    if not folds:  # dimension 0 is the symbol N: nothing to do
        assert not reshape_dims.run(model).changed
        return
    out, ops = apply(reshape_dims.run, model, {"x": x(2, 3, 8)})
    assert "Gather" not in ops
    dead_code.run(out)
    assert "Shape" not in Counter(node.op_type for node in out.graph.node)


def test_a_shape_read_through_a_transpose_reads_the_input_instead():
    """Shape(Transpose(x, perm))[k] is Shape(x)[perm[k]]: the transposed tensor's value is not needed for it."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Shape", ["t"], ["s"]),
        helper.make_node("Gather", ["s", "k"], ["d"], axis=0),
        helper.make_node("Cast", ["d"], ["df"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["t", "df"], ["y"]),
    ]
    model = model_of(nodes, [("x", ["N", "S", "C"])], ["y"], [numpy_helper.from_array(np.array(1, np.int64), "k")])
    shape_inference.run(model)
    out, _ = apply(reshape_dims.run, model, {"x": x(2, 3, 4)})
    shape = next(node for node in out.graph.node if node.op_type == "Shape")
    gather = next(node for node in out.graph.node if node.op_type == "Gather")
    index = next(t for t in out.graph.initializer if t.name == gather.input[1])
    assert shape.input[0] == "x" and int(numpy_helper.to_array(index)) == 2
    np.testing.assert_allclose(run_ort(out, {"x": x(5, 1, 4)})[0].shape, (5, 4, 1))
