"""Reductions along axes, arg-reductions, softmax family, matrix products, scans and sorting."""

from __future__ import annotations

import numpy as np

from ..registry import fills_out, op, slot
from .elementwise import CHUNK


def _reduce_axes(x, axes, noop_with_empty_axes):
    if axes is None or len(axes) == 0:
        return "noop" if noop_with_empty_axes else None
    return tuple(int(a) for a in axes)


def _reduction(name: str, fn, axes_input_since: int) -> None:
    def from_attr(x, *, axes=None, keepdims=1, noop_with_empty_axes=0):
        return run(x, axes, keepdims, noop_with_empty_axes)

    def from_input(x, axes=None, *, keepdims=1, noop_with_empty_axes=0):
        return run(x, axes, keepdims, noop_with_empty_axes)

    def run(x, axes, keepdims, noop):
        axes = _reduce_axes(x, axes, noop)
        if axes == "noop":
            return x
        return np.asarray(fn(x, axes, bool(keepdims))).astype(x.dtype, copy=False)

    for kernel, since in ((from_attr, 1), (from_input, axes_input_since)):
        kernel.__name__ = kernel.__qualname__ = name
        op(name, since=since)(kernel)


def _sum_square(x, a, k):
    return np.sum(x * x, axis=a, keepdims=k)


def _log_sum_exp(x, a, k):
    m = np.max(x, axis=a, keepdims=True) if x.size else np.zeros((1,) * x.ndim, x.dtype)
    m = np.where(np.isfinite(m), m, 0)
    out = np.log(np.sum(np.exp(x - m), axis=a, keepdims=True)) + m
    return out if k else np.squeeze(out, axis=a if a is not None else None)


def _extreme(fn, empty):
    def reduce(x, a, k):
        if x.size == 0:
            shape = [1 if (a is None or i in [j % x.ndim for j in a]) else d for i, d in enumerate(x.shape)]
            out = np.full(shape, empty, dtype=x.dtype if x.dtype.kind == "f" else np.float64)
            return out if k else out.reshape([d for i, d in enumerate(x.shape) if not (a is None or i in a)])
        return fn(x, axis=a, keepdims=k)

    return reduce


_REDUCTIONS = {
    "ReduceSum": (lambda x, a, k: np.sum(x, axis=a, keepdims=k), 13),
    "ReduceMean": (lambda x, a, k: np.mean(x, axis=a, keepdims=k), 18),
    "ReduceMax": (_extreme(np.max, -np.inf), 18),
    "ReduceMin": (_extreme(np.min, np.inf), 18),
    "ReduceProd": (lambda x, a, k: np.prod(x, axis=a, keepdims=k), 18),
    "ReduceL1": (lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k), 18),
    "ReduceL2": (lambda x, a, k: np.sqrt(_sum_square(x, a, k)), 18),
    "ReduceSumSquare": (_sum_square, 18),
    "ReduceLogSum": (lambda x, a, k: np.log(np.sum(x, axis=a, keepdims=k)), 18),
    "ReduceLogSumExp": (_log_sum_exp, 18),
}
for _name, (_fn, _since) in _REDUCTIONS.items():
    _reduction(_name, _fn, _since)


def _arg(fn):
    def kernel(x, *, axis=0, keepdims=1, select_last_index=0):
        if select_last_index:
            flipped = np.flip(x, axis)
            out = x.shape[axis] - 1 - fn(flipped, axis=axis)
        else:
            out = fn(x, axis=axis)
        out = out.astype(np.int64)
        return np.expand_dims(out, axis) if keepdims else out

    return kernel


op("ArgMax")(_arg(np.argmax))
op("ArgMin")(_arg(np.argmin))


@np.errstate(invalid="ignore")  # a row of -inf (every position masked) is NaN by definition
def _softmax(x, axis, out=None):
    axis = axis + x.ndim if axis < 0 else axis
    if axis == x.ndim - 1 and x.dtype.kind == "f" and x.size:
        return _softmax_rows(np.ascontiguousarray(x), out)
    e = np.subtract(x, np.max(x, axis=axis, keepdims=True))
    np.exp(e, out=e)
    e /= np.sum(e, axis=axis, keepdims=True)
    return e


def _softmax_rows(x, out=None):
    """Softmax over the last axis, a block of rows at a time, in place in the output: its four passes run
    on a block in cache (attention scores at batch 8 are 2 MiB and more)."""
    out = slot(out, x.shape, x.dtype)
    out = np.empty_like(x) if out is None else out
    width = x.shape[-1]
    rows, flat = x.reshape(-1, width), out.reshape(-1, width)
    step = max(1, CHUNK // width)
    for r in range(0, rows.shape[0], step):
        softmax_last(rows[r : r + step], flat[r : r + step])
    return out


def softmax_last(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of `x` into `out` (which may be `x`); returns the rows' maxima, from which
    a caller can tell whether any row is NaN (only a row whose maximum is not finite can be). The row sums
    are a product with a column of ones: BLAS reads the block once."""
    top = np.max(x, axis=-1, keepdims=True)
    np.subtract(x, top, out=out)
    np.exp(out, out=out)
    total = np.matmul(out, np.ones((x.shape[-1], 1), x.dtype))
    np.reciprocal(total, out=total)
    out *= total
    return top


def _flattened(fn):
    # Before opset 13, softmax-like ops worked on x flattened to 2-D at `axis`.
    def kernel(x, *, axis=1):
        axis = axis + x.ndim if axis < 0 else axis
        flat = x.reshape(int(np.prod(x.shape[:axis])), -1)
        return fn(flat, axis=1).reshape(x.shape).astype(x.dtype, copy=False)

    return kernel


def _along(fn):
    def kernel(x, *, axis=-1):
        return fn(x, axis=axis).astype(x.dtype, copy=False)

    return kernel


def _log_softmax(x, axis):
    m = x - np.max(x, axis=axis, keepdims=True)
    return m - np.log(np.sum(np.exp(m), axis=axis, keepdims=True))


def _hardmax(x, axis):
    out = np.zeros_like(x)
    np.put_along_axis(out, np.expand_dims(np.argmax(x, axis=axis), axis), 1, axis=axis)
    return out


for _name, _fn in (("Softmax", _softmax), ("LogSoftmax", _log_softmax), ("Hardmax", _hardmax)):
    op(_name)(_flattened(_fn))
for _name, _fn in (("LogSoftmax", _log_softmax), ("Hardmax", _hardmax)):
    op(_name, since=13)(_along(_fn))


@op("Softmax", since=13)
@fills_out
def Softmax(x, *, axis=-1, out=None):
    return _softmax(x, axis, out).astype(x.dtype, copy=False)


@op("MatMul")
@fills_out
def MatMul(a, b, *, out=None):
    """`out`: the arena slot, written straight into when it has the result's shape and dtype (BERT's
    feed-forward products are 4 MiB at batch 8, a copy each otherwise)."""
    if a.ndim < 2 or b.ndim < 2:
        return np.matmul(a, b)
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    y = slot(out, shape, a.dtype) if a.dtype == b.dtype else None
    if a.ndim > 2 and b.ndim == 2 and a.flags.c_contiguous:
        # One GEMM over all leading axes rather than one per batch entry: 15-30% faster on BERT's projections.
        flat = np.matmul(a.reshape(-1, a.shape[-1]), b, out=None if y is None else y.reshape(-1, b.shape[1]))
        return flat.reshape(shape) if y is None else y
    return np.matmul(a, b) if y is None else np.matmul(a, b, out=y)


@op("Gemm")
def Gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    y = (a.T if transA else a) @ (b.T if transB else b)
    if alpha != 1.0:
        y = y * np.asarray(alpha, y.dtype)
    if c is not None:
        y = y + (c * np.asarray(beta, c.dtype) if beta != 1.0 else c)
    return y.astype(a.dtype, copy=False)


@op("Einsum")
def Einsum(*xs, equation):
    return np.einsum(equation.replace(" ", ""), *xs)


@op("Det")
def Det(x):
    return np.linalg.det(x).astype(x.dtype)


@op("LpNormalization")
def LpNormalization(x, *, axis=-1, p=2):
    norm = np.sum(np.abs(x), axis=axis, keepdims=True) if p == 1 else np.sqrt(np.sum(x * x, axis=axis, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm == 0, 0, x / norm).astype(x.dtype)


def _scan(fn, identity):
    def kernel(x, axis, *, exclusive=0, reverse=0):
        axis = int(np.asarray(axis).reshape(-1)[0])
        y = np.flip(x, axis) if reverse else x
        out = fn(y, axis=axis, dtype=x.dtype)
        if exclusive:
            pad = np.full_like(np.take(out, [0], axis=axis), identity)
            out = np.concatenate([pad, np.take(out, range(out.shape[axis] - 1), axis=axis)], axis=axis)
        return np.flip(out, axis) if reverse else out

    return kernel


op("CumSum")(_scan(np.cumsum, 0))
op("CumProd")(_scan(np.cumprod, 1))


@op("TopK", since=10)
def TopK(x, k, *, axis=-1, largest=1, sorted=1):  # noqa: A002
    k = int(np.asarray(k).reshape(-1)[0])
    axis = axis + x.ndim if axis < 0 else axis
    # Stable sorts keep ties in index order, as ONNX asks; for the largest, sort the reversed tensor
    # ascending and read it backwards (negating would wrap unsigned values).
    if largest:
        n = x.shape[axis]
        order = np.flip(n - 1 - np.argsort(np.flip(x, axis), axis=axis, kind="stable"), axis)
    else:
        order = np.argsort(x, axis=axis, kind="stable")
    idx = np.take(order, range(k), axis=axis)
    return np.take_along_axis(x, idx, axis=axis), idx.astype(np.int64)


@op("TopK")
def TopK_1(x, *, k, axis=-1):
    return TopK(x, np.array([k]), axis=axis)


@op("Unique")
def Unique(x, *, axis=None, sorted=1):  # noqa: A002
    values, first, inverse, counts = np.unique(x, return_index=True, return_inverse=True, return_counts=True, axis=axis)
    if not sorted:
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        values = np.take(values, order, axis=0 if axis is None else axis)
        first, counts, inverse = first[order], counts[order], rank[inverse.reshape(-1)]
    return values, first.astype(np.int64), inverse.reshape(-1).astype(np.int64), counts.astype(np.int64)
