"""The `common_subexpressions` pass (`ferry/optimize/passes/common_subexpressions.py`), checked in ONNX Runtime."""

from __future__ import annotations

from collections import Counter

import numpy as np
from onnx import helper

from ferry.optimize.passes import (
    common_subexpressions,
)
from optimize_helpers import apply, const, model_of, x


def test_repeated_work_and_equal_constants_are_merged():
    """Per-layer copies of the same mask bias (equal constants under different names) and of Shape(x)."""
    n = helper.make_node
    nodes = [
        n("Greater", ["x", "zero_a"], ["mask"]),
        n("Where", ["mask", "zero_a", "ninf_a"], ["bias_a"]),
        n("Where", ["mask", "zero_b", "ninf_b"], ["bias_b"]),  # the same, from constants of its own
        n("Add", ["bias_a", "bias_b"], ["s"]),
        n("Shape", ["x"], ["shape_a"]),
        n("Shape", ["x"], ["shape_b"]),
        n("Reshape", ["s", "shape_a"], ["r"]),
        n("Reshape", ["r", "shape_b"], ["y"]),
        n("Relu", ["x"], ["out_a"]),
        n("Relu", ["x"], ["out_b"]),  # both graph outputs: their names stay
    ]
    inits = [const("zero_a", 0.0), const("zero_b", 0.0), const("ninf_a", -np.inf), const("ninf_b", -np.inf)]
    out, ops = apply(common_subexpressions.run, model_of(nodes, [("x", [2, 3])], ["y", "out_a", "out_b"], inits),
                     {"x": x(2, 3)})  # fmt: skip
    assert ops == {"Greater": 1, "Where": 1, "Add": 1, "Shape": 1, "Reshape": 2, "Relu": 2}
    assert sorted(t.name for t in out.graph.initializer) == ["ninf_a", "zero_a"]


def test_random_ops_and_parameters_are_never_merged():
    n = helper.make_node
    nodes = [
        n("RandomUniformLike", ["x"], ["r1"]),
        n("RandomUniformLike", ["x"], ["r2"]),
        n("Sub", ["r1", "r2"], ["d"]),  # not all zeros: two draws
        n("Gemm", ["x", "w1", "b1"], ["g1"]),
        n("Gemm", ["x", "w2", "b2"], ["g2"]),
        n("Add", ["g1", "g2"], ["y"]),
    ]
    inits = [const("w1", x(3, 3)), const("w2", x(3, 3)), const("b1", np.zeros(3)), const("b2", np.zeros(3))]
    model = model_of(nodes, [("x", [2, 3])], ["d", "y"], inits)
    assert not common_subexpressions.run(model).changed  # pruning rewrites b1 and b2 in place, apart
    assert Counter(node.op_type for node in model.graph.node)["RandomUniformLike"] == 2
