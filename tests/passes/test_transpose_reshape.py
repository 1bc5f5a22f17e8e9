"""The `transpose_reshape` pass (`ferry/optimize/passes/transpose_reshape.py`), checked in ONNX Runtime."""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from ferry.optimize.passes import (
    transpose_reshape,
)
from optimize_helpers import apply, model_of, x


def test_transposes_cancel_or_merge_and_reshapes_collapse():
    nodes = [
        helper.make_node("Transpose", ["x"], ["t1"], perm=[0, 2, 1]),
        helper.make_node("Transpose", ["t1"], ["t2"], perm=[0, 2, 1]),  # cancels
        helper.make_node("Transpose", ["t2"], ["t3"], perm=[1, 0, 2]),
        helper.make_node("Transpose", ["t3"], ["t4"], perm=[0, 2, 1]),  # merges with the one before
        helper.make_node("Reshape", ["t4", "s1"], ["r1"]),
        helper.make_node("Reshape", ["r1", "s2"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array([4, 6], np.int64), "s1"),
             numpy_helper.from_array(np.array([24], np.int64), "s2")]  # fmt: skip
    _, ops = apply(transpose_reshape.run, model_of(nodes, [("x", [2, 3, 4])], ["y"], inits), {"x": x(2, 3, 4)})
    assert ops == {"Transpose": 1, "Reshape": 1}
