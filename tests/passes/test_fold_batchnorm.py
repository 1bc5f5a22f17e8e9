"""The `fold_batchnorm` pass (`ferry/optimize/passes/fold_batchnorm.py`), checked in ONNX Runtime."""

from __future__ import annotations

from ferry.optimize.passes import (
    fold_batchnorm,
)
from optimize_helpers import apply, conv_bn_relu, x


def test_batchnorm_folds_into_conv():
    _, ops = apply(fold_batchnorm.run, conv_bn_relu(), {"x": x(1, 3, 8, 8)})
    assert ops == {"Conv": 1, "Relu": 1}
