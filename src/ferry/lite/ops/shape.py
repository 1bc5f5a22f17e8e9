"""Ops that move data without computing on it: shape, reshape, slicing, joining, padding, constants."""

from __future__ import annotations

import numpy as np

from ..registry import op
from .elementwise import np_dtype


def _axes(axes, rank: int) -> list[int]:
    return [int(a) + rank if int(a) < 0 else int(a) for a in np.atleast_1d(axes)]


def scalar(v):
    """The one value of a scalar or one-element tensor input."""
    return np.asarray(v).reshape(-1)[0].item()


@op("Identity")
def Identity(x):
    return x


@op("Shape")
def Shape(x, *, start=0, end=None):
    return np.array(x.shape[start:end], dtype=np.int64)


@op("Size")
def Size(x):
    return np.array(x.size, dtype=np.int64)


@op("Reshape", since=5)
def Reshape(x, shape, *, allowzero=0):
    shape = [int(s) for s in shape]
    if not allowzero:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@op("Flatten")
def Flatten(x, *, axis=1):
    axis = axis + x.ndim if axis < 0 else axis
    return x.reshape(int(np.prod(x.shape[:axis])), -1) if x.size else x.reshape(int(np.prod(x.shape[:axis])), 0)


@op("Squeeze")
def Squeeze_1(x, *, axes=None):
    return Squeeze(x, None if axes is None else np.array(axes))


@op("Squeeze", since=13)
def Squeeze(x, axes=None):
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(_axes(axes, x.ndim)))


@op("Unsqueeze")
def Unsqueeze_1(x, *, axes):
    return Unsqueeze(x, np.array(axes))


@op("Unsqueeze", since=13)
def Unsqueeze(x, axes):
    axes = np.atleast_1d(axes)
    rank = x.ndim + len(axes)
    return np.expand_dims(x, tuple(sorted(_axes(axes, rank))))


@op("Transpose")
def Transpose(x, *, perm=None):
    return np.transpose(x, perm)


@op("Concat")
def Concat(*xs, axis):
    return np.concatenate(xs, axis=axis)


@op("Split")
def Split_1(x, *, axis=0, split=None, _num_outputs=2):
    return Split(x, None if split is None else np.array(split), axis=axis, _num_outputs=_num_outputs)


@op("Split", since=13)
def Split(x, split=None, *, axis=0, num_outputs=None, _num_outputs=2):
    if split is None:
        n = num_outputs or _num_outputs
        size = -(-x.shape[axis] // n)
        split = [size] * (x.shape[axis] // size) + ([x.shape[axis] % size] if x.shape[axis] % size else [])
    return tuple(np.split(x, np.cumsum(split)[:-1], axis=axis))


@op("Slice")
def Slice_1(x, *, starts, ends, axes=None):
    return Slice(x, np.array(starts), np.array(ends), None if axes is None else np.array(axes))


@op("Slice", since=10)
def Slice(x, starts, ends, axes=None, steps=None):
    index = [slice(None)] * x.ndim
    axes = range(len(starts)) if axes is None else _axes(axes, x.ndim)
    steps = [1] * len(starts) if steps is None else steps
    for axis, start, end, step in zip(axes, starts, ends, steps):
        index[axis] = slice(*_clamp(int(start), int(end), int(step), x.shape[axis]))
    return x[tuple(index)]


def _clamp(start: int, end: int, step: int, dim: int) -> tuple[int | None, int | None, int]:
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        return max(0, min(start, dim)), max(0, min(end, dim)), step
    start = max(-1, min(start, dim - 1))
    end = max(-1, min(end, dim - 1))
    return start, (None if end < 0 else end), step


@op("Expand")
def Expand(x, shape):
    return x * np.ones(tuple(int(s) for s in shape), dtype=x.dtype)


@op("Tile")
def Tile(x, repeats):
    return np.tile(x, tuple(int(r) for r in repeats))


@op("Constant")
def Constant(*, value=None, value_float=None, value_floats=None, value_int=None, value_ints=None,
             value_string=None, value_strings=None, sparse_value=None):  # fmt: skip
    for v, dtype in ((value, None), (sparse_value, None), (value_float, np.float32), (value_floats, np.float32),
                     (value_int, np.int64), (value_ints, np.int64), (value_string, object),
                     (value_strings, object)):  # fmt: skip
        if v is not None:
            return np.asarray(v) if dtype is None else np.array(v, dtype=dtype)
    raise ValueError("Constant without a value")


@op("ConstantOfShape")
def ConstantOfShape(shape, *, value=None):
    fill = np.zeros(1, np.float32) if value is None else value
    return np.full(tuple(int(s) for s in shape), fill.reshape(-1)[0], dtype=fill.dtype)


@op("Range")
def Range(start, limit, delta):
    return np.arange(scalar(start), scalar(limit), scalar(delta)).astype(start.dtype)


@op("EyeLike")
def EyeLike(x, *, dtype=None, k=0):
    return np.eye(*x.shape, k=k, dtype=x.dtype if dtype is None else np_dtype(dtype))


@op("Pad")
def Pad_2(x, *, pads, mode="constant", value=0.0):
    return Pad(x, np.array(pads), np.array(value, x.dtype), mode=mode)


@op("Pad", since=11)
def Pad(x, pads, constant_value=None, axes=None, *, mode="constant"):
    axes = list(range(x.ndim)) if axes is None else _axes(axes, x.ndim)
    n = len(axes)
    width = [(0, 0)] * x.ndim
    for i, axis in enumerate(axes):
        width[axis] = (int(pads[i]), int(pads[i + n]))
    # Negative pads crop.
    crop = tuple(slice(-b if b < 0 else 0, e if e < 0 else None) for b, e in width)
    x = x[crop]
    width = [(max(b, 0), max(e, 0)) for b, e in width]
    if mode == "constant":
        value = 0 if constant_value is None or constant_value.size == 0 else constant_value.reshape(-1)[0]
        return np.pad(x, width, mode="constant", constant_values=value)
    return np.pad(x, width, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])


@op("DepthToSpace")
def DepthToSpace(x, *, blocksize, mode="DCR"):
    b, c, h, w = x.shape
    s = blocksize
    if mode == "DCR":
        y = x.reshape(b, s, s, c // (s * s), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(b, c // (s * s), s, s, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(b, c // (s * s), h * s, w * s)


@op("SpaceToDepth")
def SpaceToDepth(x, *, blocksize, mode="DCR"):
    b, c, h, w = x.shape
    s = blocksize
    y = x.reshape(b, c, h // s, s, w // s, s)
    y = y.transpose(0, 3, 5, 1, 2, 4) if mode == "DCR" else y.transpose(0, 1, 3, 5, 2, 4)
    return y.reshape(b, c * s * s, h // s, w // s)


@op("Trilu")
def Trilu(x, k=None, *, upper=1):
    k = 0 if k is None else int(k)
    return np.triu(x, k) if upper else np.tril(x, k)


@op("NonZero")
def NonZero(x):
    return np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


@op("Compress")
def Compress(x, condition, *, axis=None):
    return np.compress(condition, x, axis=axis)


@op("ReverseSequence")
def ReverseSequence(x, lengths, *, batch_axis=1, time_axis=0):
    y = x.copy()
    for b, n in enumerate(lengths):
        src = [slice(None)] * x.ndim
        src[batch_axis], src[time_axis] = b, slice(0, int(n))
        y[tuple(src)] = np.flip(x[tuple(src)], axis=time_axis - (batch_axis < time_axis))
    return y


@op("OneHot")
def OneHot(indices, depth, values, *, axis=-1):
    depth = int(np.asarray(depth).reshape(-1)[0])
    idx = np.asarray(indices).astype(np.int64)
    idx = np.where(idx < 0, idx + depth, idx)
    rank = idx.ndim + 1
    axis = axis + rank if axis < 0 else axis
    hot = np.expand_dims(idx, axis) == np.arange(depth).reshape([depth if i == axis else 1 for i in range(rank)])
    return np.where(hot, values[1], values[0]).astype(values.dtype)


@op("CenterCropPad")
def CenterCropPad(x, shape, *, axes=None):
    axes = list(range(x.ndim)) if axes is None else _axes(axes, x.ndim)
    y = x
    for axis, size in zip(axes, shape):
        size, dim = int(size), y.shape[axis]
        if size < dim:
            start = (dim - size) // 2
            y = np.take(y, range(start, start + size), axis=axis)
        elif size > dim:
            before = (size - dim) // 2
            width = [(0, 0)] * y.ndim
            width[axis] = (before, size - dim - before)
            y = np.pad(y, width)
    return y
