"""The `patterns` pass (`ferry/optimize/passes/patterns.py`), checked in ONNX Runtime."""

from __future__ import annotations

import math

import onnx
import pytest
from onnx import helper

from ferry.optimize.passes import (
    patterns,
)
from optimize_helpers import apply, const, model_of, x


def decomposed_layernorm() -> onnx.ModelProto:
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[-1]),
        helper.make_node("Sub", ["x", "mean"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["std"]),
        helper.make_node("Div", ["d", "std"], ["norm"]),
        helper.make_node("Mul", ["norm", "gamma"], ["scaled"]),
        helper.make_node("Add", ["scaled", "beta"], ["y"]),
    ]
    inits = [const("two", 2.0), const("eps", 1e-5), const("gamma", x(16)), const("beta", x(16))]
    return model_of(nodes, [("x", [2, 7, 16])], ["y"], inits, opset=17)


def test_decomposed_layernorm_is_recognised():
    _, ops = apply(patterns.run, decomposed_layernorm(), {"x": x(2, 7, 16)})
    assert ops == {"LayerNormalization": 1}


@pytest.mark.parametrize("half_first", [True, False])
@pytest.mark.parametrize("opset", [17, 20])
def test_decomposed_gelu_is_recognised(half_first, opset):
    nodes = [helper.make_node("Div", ["x", "sqrt2"], ["s"]), helper.make_node("Erf", ["s"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["p"])]  # fmt: skip
    if half_first:
        nodes += [helper.make_node("Mul", ["x", "half"], ["h"]), helper.make_node("Mul", ["h", "p"], ["y"])]
    else:
        nodes += [helper.make_node("Mul", ["x", "p"], ["m"]), helper.make_node("Mul", ["m", "half"], ["y"])]
    inits = [const("sqrt2", math.sqrt(2)), const("one", 1.0), const("half", 0.5)]
    model = model_of(nodes, [("x", [3, 8])], ["y"], inits, opset=opset)
    out, ops = apply(patterns.run, model, {"x": x(3, 8)})
    assert ops == {"Gelu": 1}
    assert out.graph.node[0].domain == ("" if opset >= 20 else "com.microsoft")
