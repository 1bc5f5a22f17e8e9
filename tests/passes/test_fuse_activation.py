"""The `fuse_activation` pass (`ferry/optimize/passes/fuse_activation.py`), checked in ONNX Runtime."""

from __future__ import annotations

import onnx
import pytest
from onnx import helper

from ferry.optimize.passes import (
    fold_batchnorm,
    fuse_activation,
)
from optimize_helpers import apply, const, conv_bn_relu, model_of, x


@pytest.mark.parametrize("activation, extra", [("Relu", ()), ("Clip", ("lo", "hi")), ("Sigmoid", ())])
def test_activation_fuses_into_conv(activation, extra):
    model = conv_bn_relu(activation, extra)
    folded, _ = apply(fold_batchnorm.run, model, {"x": x(1, 3, 8, 8)})
    out, ops = apply(fuse_activation.run, folded, {"x": x(1, 3, 8, 8)})
    assert ops == {"FusedConv": 1}
    assert next(a.s for a in out.graph.node[0].attribute if a.name == "activation") == activation.encode()


def test_matmul_add_becomes_gemm_and_takes_the_activation():
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"]),
    ]
    model = model_of(nodes, [("x", [2, 5])], ["y"], [const("w", x(5, 3)), const("b", x(3))])
    _, ops = apply(fuse_activation.run, model, {"x": x(2, 5)})
    assert ops == {"FusedGemm": 1}


def test_residual_add_and_activation_fuse_into_the_conv():
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "x"], ["s"]),  # the block's skip connection
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    inits = [const("w1", x(4, 4, 3, 3)), const("b1", x(4)), const("w2", x(4, 4, 3, 3)), const("b2", x(4))]
    model = model_of(nodes, [("x", [1, 4, 6, 6])], ["y"], inits)
    onnx_model = onnx.ModelProto()
    onnx_model.CopyFrom(model)
    onnx_model = onnx.shape_inference.infer_shapes(onnx_model)  # the pass checks the residual's shape
    out, ops = apply(fuse_activation.run, onnx_model, {"x": x(1, 4, 6, 6)})
    assert ops == {"FusedConv": 2}
    assert [len(n.input) for n in out.graph.node] == [3, 4]  # the second carries the residual as Z
