"""The `identity` pass (`ferry/optimize/passes/identity.py`), checked in ONNX Runtime."""

from __future__ import annotations

from onnx import helper

from ferry.optimize.passes import (
    dead_code,
    identity,
)
from optimize_helpers import apply, const, model_of, x


def test_dead_code_and_identity_removal():
    nodes = [
        helper.make_node("Identity", ["x"], ["i"]),
        helper.make_node("Relu", ["i"], ["r"]),
        helper.make_node("Dropout", ["r"], ["d"]),
        helper.make_node("Sigmoid", ["x"], ["unused"]),
        helper.make_node("Identity", ["d"], ["y"]),  # a graph output: the producer takes its name
    ]
    model = model_of(nodes, [("x", [4])], ["y"], [const("orphan", [1.0])])
    out, ops = apply(identity.run, model, {"x": x(4)})
    assert ops == {"Relu": 1, "Sigmoid": 1}
    out, ops = apply(dead_code.run, out, {"x": x(4)})
    assert ops == {"Relu": 1} and not out.graph.initializer
