"""The `constant_folding` pass (`ferry/optimize/passes/constant_folding.py`), checked in ONNX Runtime."""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from ferry.optimize.passes import (
    constant_folding,
)
from optimize_helpers import apply, const, model_of, x


def test_constant_folding_evaluates_constant_subgraphs():
    nodes = [
        helper.make_node("Add", ["a", "b"], ["ab"]),
        helper.make_node("Mul", ["ab", "ab"], ["sq"]),
        helper.make_node("Add", ["x", "sq"], ["y"]),
    ]
    model = model_of(nodes, [("x", [3])], ["y"], [const("a", [1, 2, 3]), const("b", [1, 1, 1])])
    out, ops = apply(constant_folding.run, model, {"x": x(3)})
    assert ops == {"Add": 1}
    folded = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    np.testing.assert_array_equal(folded["sq"], [4, 9, 16])
