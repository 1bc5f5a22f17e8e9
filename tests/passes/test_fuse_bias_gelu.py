"""The `fuse_bias_gelu` pass (`ferry/optimize/passes/fuse_bias_gelu.py`), checked in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from ferry.optimize.passes import (
    fuse_bias_gelu,
)
from optimize_helpers import apply, const, model_of, run_ort, x


def _lite_agrees(model: onnx.ModelProto, feeds: dict) -> None:
    from ferry.exporters.onnx_to_lite import from_onnx
    from ferry.lite import Engine

    want = run_ort(model, feeds)
    got = Engine(from_onnx(model)).run(feeds)
    for w, name in zip(want, [o.name for o in model.graph.output]):
        np.testing.assert_allclose(got[name], w, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("gelu_domain", ["", "com.microsoft"])
def test_bias_add_and_gelu_become_bias_gelu(gelu_domain):
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["bias", "h"], ["hb"]),  # the bias first: either order is an Add
        helper.make_node("Gelu", ["hb"], ["y"]),
    ]
    inits = [const("w", x(16, 32)), const("bias", x(32))]
    model = model_of(nodes, [("x", [2, 5, 16])], ["y"], inits, opset=20)
    if gelu_domain:  # ORT's own Gelu, as older exports and ferry's pattern pass (below opset 20) write it
        model.graph.node[2].domain = gelu_domain
        model.opset_import.append(helper.make_opsetid(gelu_domain, 1))
    model = onnx.shape_inference.infer_shapes(model)  # the pass checks the bias against x's last axis
    out, ops = apply(fuse_bias_gelu.run, model, {"x": x(2, 5, 16)})
    assert ops == {"MatMul": 1, "BiasGelu": 1}
    _lite_agrees(out, {"x": x(2, 5, 16)})


def test_bias_gelu_is_left_alone_when_the_bias_would_broadcast():
    nodes = [helper.make_node("Add", ["x", "bias"], ["hb"]), helper.make_node("Gelu", ["hb"], ["y"])]
    model = model_of(nodes, [("x", [2, 5, 16])], ["y"], [const("bias", x(1))], opset=20)
    model = onnx.shape_inference.infer_shapes(model)
    assert not fuse_bias_gelu.run(model).changed
