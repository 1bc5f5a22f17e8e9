"""Window geometry (padding, output sizes, strided views) shared by convolution and pooling; the pooling ops."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..registry import fills_out, op, slot

POOL_BLOCK_BYTES = 512 << 10  # padded input per block of planes


def _pads(auto_pad, pads, in_shape, kernel, strides, dilations):
    """Begin and end padding per spatial axis, following ONNX's auto_pad rules."""
    n = len(in_shape)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(in_shape, kernel, strides, dilations):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else big)
            end.append(big if auto_pad == "SAME_UPPER" else small)
        return begin, end
    if auto_pad == "VALID" or pads is None:
        return [0] * n, [0] * n
    return list(pads[:n]), list(pads[n:])


def _out_size(size, k, s, d, begin, end, ceil_mode=0):
    span = size + begin + end - ((k - 1) * d + 1)
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + begin:
        out -= 1  # the last window must start inside the input or its left padding
    return max(out, 0)


def _windows(x, kernel, strides, dilations, begin, end, out, fill):
    """(N, C, *out, *kernel) view of x's windows, padded with `fill` (extra end padding for ceil mode)."""
    width = [(0, 0), (0, 0)]
    for i, (size, k, s, d) in enumerate(zip(x.shape[2:], kernel, strides, dilations)):
        need = (out[i] - 1) * s + (k - 1) * d + 1
        width.append((begin[i], max(need - size - begin[i], end[i], 0)))
    xp = np.pad(x, width, constant_values=fill) if any(w != (0, 0) for w in width) else x
    extents = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    v = sliding_window_view(xp, extents, axis=tuple(range(2, x.ndim)))
    index = [slice(None), slice(None)]
    index += [slice(0, (o - 1) * s + 1, s) for o, s in zip(out, strides)]
    index += [slice(None, None, d) for d in dilations]
    return v[tuple(index)]


def _geometry(x, kernel, auto_pad, pads, strides, dilations, ceil_mode=0):
    n = x.ndim - 2
    strides = list(strides or [1] * n)
    dilations = list(dilations or [1] * n)
    begin, end = _pads(auto_pad, pads, x.shape[2:], kernel, strides, dilations)
    out = [_out_size(sz, k, s, d, b, e, ceil_mode)
           for sz, k, s, d, b, e in zip(x.shape[2:], kernel, strides, dilations, begin, end)]  # fmt: skip
    return strides, dilations, begin, end, out


def _padded(x, begin, end, fill=0):
    if not any(begin) and not any(end):
        return x
    shape = x.shape[:2] + tuple(d + b + e for d, b, e in zip(x.shape[2:], begin, end))
    xp = np.full(shape, fill, dtype=x.dtype)
    xp[(slice(None), slice(None), *(slice(b, b + d) for b, d in zip(begin, x.shape[2:])))] = x
    return xp


@op("MaxPool")
@fills_out
def MaxPool(x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape, pads=None, storage_order=0,
            strides=None, _num_outputs=1, out=None):  # fmt: skip
    strides, dilations, begin, end, sizes = _geometry(x, kernel_shape, auto_pad, pads, strides, dilations, ceil_mode)
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    if _num_outputs == 1 and len(kernel_shape) == 2:
        # The maximum over a window is the maximum over its rows of the maximum along each row: kh + kw
        # passes instead of kh * kw. A block of (image, channel) planes at a time, so that the padded copy
        # stays small next to the memory plan (512 KiB measured fastest).
        (kh, kw), (sy, sx), (dy, dx), (oh, ow) = kernel_shape, strides, dilations, sizes
        geometry = zip(sizes, strides, kernel_shape, dilations, x.shape[2:], begin, end)
        extra = [max((o - 1) * s + (k - 1) * d + 1 - size - b, e, 0) for o, s, k, d, size, b, e in geometry]
        planes = x.shape[0] * x.shape[1]
        result = slot(out, (*x.shape[:2], oh, ow), x.dtype)
        result = np.empty((*x.shape[:2], oh, ow), dtype=x.dtype) if result is None else result
        y = result.reshape(planes, oh, ow)
        planes_in = x.reshape(1, planes, *x.shape[2:])
        plane = (x.shape[2] + begin[0] + extra[0]) * (x.shape[3] + begin[1] + extra[1]) * x.itemsize
        step = max(1, POOL_BLOCK_BYTES // plane)
        for p0 in range(0, planes, step):
            xp = _padded(planes_in[:, p0 : p0 + step], begin, extra, fill)[0]
            across = xp[:, :, : (ow - 1) * sx + 1 : sx].copy()
            for kx in range(1, kw):
                np.maximum(across, xp[:, :, kx * dx : kx * dx + (ow - 1) * sx + 1 : sx], out=across)
            block = y[p0 : p0 + step]
            block[...] = across[:, : (oh - 1) * sy + 1 : sy]
            for ky in range(1, kh):
                np.maximum(block, across[:, ky * dy : ky * dy + (oh - 1) * sy + 1 : sy], out=block)
        return result
    win = _windows(x, kernel_shape, strides, dilations, begin, end, sizes, fill)
    flat = win.reshape(*win.shape[: 2 + len(sizes)], -1)
    y = flat.max(axis=-1)
    # Indices into the flattened (unpadded) input, row-major unless storage_order asks for column-major.
    spatial = x.shape[2:]
    grid = np.indices(spatial)
    if storage_order:
        strides_flat = np.cumprod([1, *spatial[:-1]])
        flat_index = sum(g * s for g, s in zip(grid, strides_flat))
    else:
        flat_index = np.ravel_multi_index(tuple(grid), spatial)
    idx = np.broadcast_to(flat_index, x.shape).astype(np.int64)
    idx = idx + (np.arange(x.shape[0] * x.shape[1]).reshape(x.shape[:2] + (1,) * len(spatial)) * int(np.prod(spatial)))
    iwin = _windows(idx, kernel_shape, strides, dilations, begin, end, sizes, -1).reshape(flat.shape)
    arg = np.argmax(flat, axis=-1)
    indices = np.take_along_axis(iwin, arg[..., None], axis=-1)[..., 0]
    return y.astype(x.dtype, copy=False), indices


@op("AveragePool")
def AveragePool(x, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None, kernel_shape, pads=None,
                strides=None):  # fmt: skip
    strides, dilations, begin, end, out = _geometry(x, kernel_shape, auto_pad, pads, strides, dilations, ceil_mode)
    xf = x.astype(np.float64)
    if count_include_pad:
        # Explicit padding counts as zeros; the extra padding of ceil mode does not count.
        width = [(0, 0), (0, 0)] + list(zip(begin, end))
        xf = np.pad(xf, width)
        begin, end = [0] * len(begin), [0] * len(end)
    win = _windows(xf, kernel_shape, strides, dilations, begin, end, out, np.nan)
    flat = win.reshape(*win.shape[: 2 + len(out)], -1)
    return np.nanmean(flat, axis=-1).astype(x.dtype)


@op("LpPool")
def LpPool(x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape, p=2, pads=None, strides=None):
    strides, dilations, begin, end, out = _geometry(x, kernel_shape, auto_pad, pads, strides, dilations, ceil_mode)
    win = _windows(np.abs(x).astype(np.float64) ** p, kernel_shape, strides, dilations, begin, end, out, 0)
    flat = win.reshape(*win.shape[: 2 + len(out)], -1)
    return (flat.sum(axis=-1) ** (1.0 / p)).astype(x.dtype)


@op("GlobalAveragePool")
def GlobalAveragePool(x):
    return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True).astype(x.dtype, copy=False)


@op("GlobalMaxPool")
def GlobalMaxPool(x):
    return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)


@op("MaxUnpool")
def MaxUnpool(x, indices, output_shape=None, *, kernel_shape, pads=None, strides=None):
    nd = x.ndim - 2
    strides = strides or [1] * nd
    pads = pads or [0] * 2 * nd
    if output_shape is None:
        spatial = [(i - 1) * s - pads[j] - pads[j + nd] + k
                   for j, (i, s, k) in enumerate(zip(x.shape[2:], strides, kernel_shape))]  # fmt: skip
        output_shape = [*x.shape[:2], *spatial]
    y = np.zeros(int(np.prod(output_shape)), dtype=x.dtype)
    y[indices.reshape(-1)] = x.reshape(-1)
    return y.reshape([int(s) for s in output_shape])
