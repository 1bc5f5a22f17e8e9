"""Quantisation ops: (de)quantise, dynamic quantise, integer matmul and convolution."""

from __future__ import annotations

import numpy as np

from ..registry import op
from .conv import Conv
from .elementwise import extended_limits, is_extended, np_dtype


def _along(v, x, axis, block_size=0):
    """Broadcast per-axis (or per-block) scale/zero point `v` against `x`."""
    v = np.asarray(v)
    if v.ndim == 0 or v.size == 1:
        return v.reshape(()) if v.ndim else v
    axis = axis + x.ndim if axis < 0 else axis
    if block_size:
        return np.repeat(v, block_size, axis=axis).take(range(x.shape[axis]), axis=axis)
    return v.reshape([-1 if i == axis else 1 for i in range(x.ndim)])


def _round_even(x):
    return np.rint(x)


@op("QuantizeLinear")
def QuantizeLinear(x, scale, zero_point=None, *, axis=1, block_size=0, output_dtype=0, saturate=1, precision=0):
    if zero_point is not None:
        target = zero_point.dtype
    elif output_dtype:
        target = np_dtype(output_dtype)
    else:
        target = np.dtype(np.uint8)
    s = _along(scale, x, axis, block_size)
    zp = 0 if zero_point is None else _along(zero_point, x, axis, block_size).astype(np.float32)
    scaled = x.astype(np.float32) / s
    if "float" in target.name:  # float8 / float4 targets: no rounding to integers, saturate to the range
        lo, hi = extended_limits(target)
        y = scaled + zp
        return (np.where(np.isnan(y), y, np.clip(y, lo, hi)) if saturate else y).astype(target)
    lo, hi = extended_limits(target) if is_extended(target) else (np.iinfo(target).min, np.iinfo(target).max)
    return np.clip(_round_even(scaled) + zp, lo, hi).astype(target)


@op("DequantizeLinear")
def DequantizeLinear(x, scale, zero_point=None, *, axis=1, block_size=0, output_dtype=0):
    s = _along(scale, x, axis, block_size)
    zp = 0 if zero_point is None else _along(zero_point, x, axis, block_size).astype(np.float32)
    out = (x.astype(np.float32) - zp) * s
    return out.astype(np.asarray(scale).dtype if not output_dtype else np_dtype(output_dtype))


@op("DynamicQuantizeLinear")
def DynamicQuantizeLinear(x):
    lo, hi = min(0.0, float(x.min())), max(0.0, float(x.max()))
    scale = np.float32((hi - lo) / 255.0) if hi != lo else np.float32(1.0)
    zp = np.clip(_round_even(0 - lo / scale), 0, 255)
    y = np.clip(_round_even(x / scale) + zp, 0, 255).astype(np.uint8)
    return y, np.array(scale, np.float32), np.array(zp, np.uint8)


@op("MatMulInteger")
def MatMulInteger(a, b, a_zero_point=None, b_zero_point=None):
    a32 = a.astype(np.int32)
    if a_zero_point is not None:
        zp = np.asarray(a_zero_point).astype(np.int32)
        a32 = a32 - (zp.reshape(-1, 1) if zp.size > 1 else zp)  # per-row zero points
    b32 = b.astype(np.int32) - (0 if b_zero_point is None else np.asarray(b_zero_point).astype(np.int32))
    return np.matmul(a32, b32).astype(np.int32)


@op("ConvInteger")
def ConvInteger(x, w, x_zero_point=None, w_zero_point=None, **attrs):
    xi = x.astype(np.int32) - (0 if x_zero_point is None else np.asarray(x_zero_point).astype(np.int32))
    wz = 0 if w_zero_point is None else np.asarray(w_zero_point).astype(np.int32)
    wi = w.astype(np.int32) - (wz.reshape(-1, *[1] * (w.ndim - 1)) if np.ndim(wz) and np.size(wz) > 1 else wz)
    if attrs.get("pads") is not None and x_zero_point is not None:
        pass  # padding with the zero point is the same as padding the shifted input with zeros
    return Conv(xi.astype(np.float64), wi.astype(np.float64), **attrs).round().astype(np.int32)


def _requantize(acc, y_scale, y_zero_point):
    target = np.asarray(y_zero_point).dtype
    info = np.iinfo(target)
    q = _round_even(acc / y_scale) + np.asarray(y_zero_point).astype(np.int64)
    return np.clip(q, info.min, info.max).astype(target)


@op("QLinearMatMul")
def QLinearMatMul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp):
    af = (a.astype(np.int64) - np.asarray(a_zp).astype(np.int64).reshape(-1, 1) if np.size(a_zp) > 1
          else a.astype(np.int64) - np.asarray(a_zp).astype(np.int64))  # fmt: skip
    bf = b.astype(np.int64) - np.asarray(b_zp).astype(np.int64)
    a_s = np.asarray(a_scale).astype(np.float64)
    acc = np.matmul(af * (a_s.reshape(-1, 1) if a_s.size > 1 else a_s), bf * np.asarray(b_scale).astype(np.float64))
    return _requantize(acc, np.asarray(y_scale).astype(np.float64), y_zp)


@op("QLinearConv")
def QLinearConv(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, b=None, **attrs):
    xf = (x.astype(np.float64) - np.asarray(x_zp).astype(np.float64)) * np.asarray(x_scale).astype(np.float64)
    ws = np.asarray(w_scale).astype(np.float64)
    wz = np.asarray(w_zp).astype(np.float64)
    shape = (-1,) + (1,) * (w.ndim - 1)
    wf = (w.astype(np.float64) - (wz.reshape(shape) if wz.size > 1 else wz)) * (
        ws.reshape(shape) if ws.size > 1 else ws
    )
    bias = None if b is None else b.astype(np.float64) * np.asarray(x_scale).astype(np.float64) * ws
    acc = Conv(xf, wf, bias, **attrs)
    return _requantize(acc, np.asarray(y_scale).astype(np.float64), y_zp)
