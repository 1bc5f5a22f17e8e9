"""The `dead_code` pass (`ferry/optimize/passes/dead_code.py`), checked in ONNX Runtime."""

from __future__ import annotations

from onnx import helper

from ferry.optimize.passes import dead_code
from optimize_helpers import apply, const, model_of, x


def test_a_dead_chain_goes_in_one_sweep_with_the_constants_only_it_read():
    nodes = [
        helper.make_node("Relu", ["x"], ["y"]),
        helper.make_node("Add", ["x", "k"], ["a"]),  # read only by the dead chain below
        helper.make_node("Mul", ["a", "a"], ["b"]),
        helper.make_node("Neg", ["b"], ["c"]),
    ]
    model = model_of(nodes, [("x", [3])], ["y"], [const("k", [1, 2, 3]), const("orphan", [0.0])])
    out, ops = apply(dead_code.run, model, {"x": x(3)})
    assert ops == {"Relu": 1} and not out.graph.initializer
    again = model_of(nodes, [("x", [3])], ["y"], [const("k", [1, 2, 3]), const("orphan", [0.0])])
    assert dead_code.run(again).counts == {"nodes": 3, "initializers": 2}
