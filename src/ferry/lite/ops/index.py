"""Indexing ops: gather and scatter in their element, slice and N-d forms."""

from __future__ import annotations

import numpy as np

from ..registry import op


def _wrap(indices, dim):
    indices = np.asarray(indices).astype(np.int64)
    return np.where(indices < 0, indices + dim, indices)


@op("Gather")
def Gather(x, indices, *, axis=0):
    return np.take(x, _wrap(indices, x.shape[axis]), axis=axis)


@op("GatherElements")
def GatherElements(x, indices, *, axis=0):
    return np.take_along_axis(x, _wrap(indices, x.shape[axis]), axis=axis)


@op("GatherND")
def GatherND(x, indices, *, batch_dims=0):
    indices = np.asarray(indices).astype(np.int64)
    batch = x.shape[:batch_dims]
    k = indices.shape[-1]
    xb = x.reshape(-1, *x.shape[batch_dims:])
    ib = indices.reshape(-1, *indices.shape[batch_dims:])
    out = []
    for xi, ii in zip(xb, ib):
        flat = ii.reshape(-1, k)
        flat = np.where(flat < 0, flat + np.array(xi.shape[:k]), flat)
        out.append(xi[tuple(flat.T)].reshape(*ii.shape[:-1], *xi.shape[k:]))
    return np.stack(out).reshape(*batch, *indices.shape[batch_dims:-1], *x.shape[batch_dims + k :])


_REDUCE = {
    "none": None, "add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum,
}  # fmt: skip


@op("ScatterElements")
def ScatterElements(x, indices, updates, *, axis=0, reduction="none"):
    y = x.copy()
    axis = axis + x.ndim if axis < 0 else axis
    idx = _wrap(indices, x.shape[axis])
    grid = list(np.indices(idx.shape))
    grid[axis] = idx
    fn = _REDUCE[reduction]
    if fn is None:
        y[tuple(grid)] = updates
    else:
        fn.at(y, tuple(grid), updates)
    return y


@op("Scatter")
def Scatter(x, indices, updates, *, axis=0):
    return ScatterElements(x, indices, updates, axis=axis)


@op("ScatterND")
def ScatterND(x, indices, updates, *, reduction="none"):
    y = x.copy()
    indices = np.asarray(indices).astype(np.int64)
    k = indices.shape[-1]
    flat = indices.reshape(-1, k)
    upd = updates.reshape(-1, *x.shape[k:])
    fn = _REDUCE[reduction]
    for i, idx in enumerate(flat):
        idx = tuple(int(v) for v in idx)
        y[idx] = upd[i] if fn is None else fn(y[idx], upd[i])
    return y


@op("TensorScatter", since=24)
def TensorScatter(past, update, write_indices=None, *, axis=-2, mode="linear"):
    y = past.copy()
    axis = axis + past.ndim if axis < 0 else axis
    batch = past.shape[0]
    starts = np.zeros(batch, np.int64) if write_indices is None else write_indices.astype(np.int64)
    length = update.shape[axis]
    for b in range(batch):
        for t in range(length):
            pos = starts[b] + t
            if mode == "circular":
                pos %= past.shape[axis]
            dst = [b] + [slice(None)] * (past.ndim - 1)
            src = [b] + [slice(None)] * (past.ndim - 1)
            dst[axis], src[axis] = int(pos), t
            y[tuple(dst)] = update[tuple(src)]
    return y
