"""ONNX Runtime's com.microsoft fused ops that ferry's optimizer writes, so the lite engine runs them too."""

from __future__ import annotations

import numpy as np

from ..registry import fills_out, op
from .conv import Conv
from .elementwise import Gelu as _Gelu
from .elementwise import gelu_erf_f32
from .norm import LayerNormalization, layernorm_rows
from .reduce import Gemm

_ACTIVATIONS = {
    "Relu": lambda y, p: np.maximum(y, 0, out=y),
    "Sigmoid": lambda y, p: 1 / (1 + np.exp(-y)),
    "Tanh": lambda y, p: np.tanh(y),
    "LeakyRelu": lambda y, p: np.where(y >= 0, y, y * p[0]),
    "HardSigmoid": lambda y, p: np.clip(p[0] * y + p[1], 0, 1),
    "Clip": lambda y, p: np.clip(y, p[0], p[1], out=y),
}


@op("FusedConv", domain="com.microsoft")
@fills_out
def FusedConv(x, w, b=None, z=None, *, activation="", activation_params=(), **attrs):
    y = Conv(x, w, b, **attrs)
    if z is not None:
        y = np.add(y, z, out=y) if np.broadcast_shapes(y.shape, z.shape) == y.shape else y + z
    return _ACTIVATIONS[activation](y, activation_params).astype(x.dtype, copy=False) if activation else y


@op("FusedGemm", domain="com.microsoft")
def FusedGemm(a, b, c=None, *, activation="", activation_params=(), activation_alpha=None, activation_beta=None,
              activation_gamma=None, **attrs):  # fmt: skip
    params = activation_params or [p for p in (activation_alpha, activation_beta) if p is not None]
    y = Gemm(a, b, c, **attrs)
    return _ACTIVATIONS[activation](y, params).astype(a.dtype, copy=False) if activation else y


@op("Gelu", domain="com.microsoft")
@fills_out
def Gelu(x, *, out=None):
    return _Gelu(x, out=out)


@op("BiasGelu", domain="com.microsoft")
@fills_out
def BiasGelu(x, bias, *, out=None):
    if x.dtype == np.float32 and x.size:
        return gelu_erf_f32(np.ascontiguousarray(x), bias, out=out)
    return _Gelu(x + bias)


@op("SkipLayerNormalization", domain="com.microsoft")
@fills_out
def SkipLayerNormalization(x, skip, gamma, beta=None, bias=None, *, epsilon=1e-12, _num_outputs=1, out=None):
    """LayerNorm(x + skip + bias) over the last axis; outputs: the result, the means, the inverse deviations
    and the sum x + skip + bias (each only as far as the node asks)."""
    blocked = x.dtype == np.float32 and x.shape == skip.shape and x.size
    # The blocked path sums inside its blocks; the sum is only materialised when it is a wanted output.
    summed = x + skip + (bias if bias is not None else 0) if _num_outputs > 3 or not blocked else None
    if blocked:
        y, mean, inv = layernorm_rows(np.ascontiguousarray(x), gamma, beta, epsilon, np.ascontiguousarray(skip), bias,
                                      out=out)  # fmt: skip
    else:
        y, mean, inv = LayerNormalization(summed, gamma, beta, epsilon=epsilon, stash_type=1)
    return (y, mean, inv, summed)[:_num_outputs] if _num_outputs > 1 else y
