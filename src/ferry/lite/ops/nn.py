"""Convolution (im2col + matmul and its special cases) and pooling."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..parallel import parallel_for
from ..registry import op

PARALLEL_MIN = 1 << 16  # elements below which splitting across threads costs more than it saves


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


def _taps(xp, kernel, strides, dilations, out):
    """For each kernel offset, the strided view of the padded input that it multiplies (2-D only)."""
    (kh, kw), (sy, sx), (dy, dx), (oh, ow) = kernel, strides, dilations, out
    for ky in range(kh):
        for kx in range(kw):
            yield (
                ky,
                kx,
                xp[:, :, ky * dy : ky * dy + (oh - 1) * sy + 1 : sy, kx * dx : kx * dx + (ow - 1) * sx + 1 : sx],
            )


def _conv_shifted(x, w, kernel, dilations, begin, end, out):
    """Stride-1 convolution without im2col. In the padded image flattened row by row, the input under
    kernel offset (ky, kx) for every output position is one contiguous window of the flat buffer, so each
    offset is one matmul on a view (no copy); the results are summed. The output is computed on the padded
    width, and the extra columns are dropped at the end. Pays off on large images."""
    n, c = x.shape[:2]
    m = w.shape[0]
    (kh, kw), (dy, dx), (oh, ow) = kernel, dilations, out
    hp, wp = x.shape[2] + begin[0] + end[0], x.shape[3] + begin[1] + end[1]
    spill = (kw - 1) * dx // wp + 1  # zero rows below, so the last window stays inside the buffer
    xp = np.zeros((n, c, hp + spill, wp), dtype=x.dtype)
    xp[:, :, begin[0] : begin[0] + x.shape[2], begin[1] : begin[1] + x.shape[3]] = x
    flat = xp.reshape(n, c, -1)
    length = oh * wp
    taps = np.ascontiguousarray(w.reshape(m, c, kh, kw).transpose(2, 3, 0, 1))
    y = np.empty((n, m, length), dtype=np.result_type(x, w))
    partial = np.empty((m, length), dtype=y.dtype)
    for i in range(n):
        for ky in range(kh):
            for kx in range(kw):
                start = ky * dy * wp + kx * dx
                window = flat[i, :, start : start + length]
                if ky == 0 and kx == 0:
                    np.matmul(taps[0, 0], window, out=y[i])
                else:
                    np.matmul(taps[ky, kx], window, out=partial)
                    y[i] += partial
    return np.ascontiguousarray(y.reshape(n, m, oh, wp)[:, :, :, :ow])


def _phases(x, kernel, strides, dilations, begin, end, out):
    """The padded input split into stride phases, each flattened row by row: a stride-s convolution becomes
    stride 1 on s*s smaller images, and under every kernel offset the input for all output positions is one
    contiguous window of a phase. Returns (phases[(py, px)] -> (N, C, length), row width, window length,
    offset(ky, kx) -> (phase, start))."""
    (kh, kw), (sy, sx), (dy, dx), (oh, ow) = kernel, strides, dilations, out
    rows = max(x.shape[2] + begin[0] + end[0], (oh - 1) * sy + (kh - 1) * dy + 1)
    cols = max(x.shape[3] + begin[1] + end[1], (ow - 1) * sx + (kw - 1) * dx + 1)
    hq, wq = -(-rows // sy) + 1, -(-cols // sx)  # one spare row: windows may run past the last row
    xp = np.zeros((x.shape[0], x.shape[1], hq * sy, wq * sx), dtype=x.dtype)
    xp[:, :, begin[0] : begin[0] + x.shape[2], begin[1] : begin[1] + x.shape[3]] = x
    phases = {}
    for py in range(sy):
        for px in range(sx):
            phase = xp[:, :, py::sy, px::sx]
            phases[py, px] = np.ascontiguousarray(phase).reshape(x.shape[0], x.shape[1], -1)

    def offset(ky, kx):
        ry, rx = ky * dy, kx * dx
        return phases[ry % sy, rx % sx], (ry // sy) * wq + rx // sx

    return offset, wq, oh * wq


def _conv_depthwise(x, w, kernel, strides, dilations, begin, end, out):
    """One filter per channel: a multiply-add per kernel offset over long contiguous windows (see _phases),
    a few channels at a time so that their accumulator stays in cache."""
    n, c = x.shape[:2]
    offset, width, length = _phases(x, kernel, strides, dilations, begin, end, out)
    wk = w.reshape(c, *kernel).astype(x.dtype, copy=False)
    acc = np.empty((n, c, length), dtype=x.dtype)

    group = max(1, (48 << 10) // (n * length))  # channels whose accumulator (about 200 KB) stays in cache

    def part(c0, c1):
        t = np.empty((n, min(group, c1 - c0), length), dtype=x.dtype)
        for g0 in range(c0, c1, group):
            g1 = min(g0 + group, c1)
            a, tt = acc[:, g0:g1], t[:, : g1 - g0]
            for ky in range(kernel[0]):
                for kx in range(kernel[1]):
                    phase, start = offset(ky, kx)
                    scale = wk[g0:g1, ky, kx].reshape(1, -1, 1)
                    window = phase[:, g0:g1, start : start + length]
                    if ky == 0 and kx == 0:
                        np.multiply(window, scale, out=a)
                    else:
                        np.multiply(window, scale, out=tt)
                        np.add(a, tt, out=a)

    # One thread: the ops here are small (cache-sized on purpose), and two threads trading the GIL between
    # them measured slower than one.
    part(0, c)
    return np.ascontiguousarray(acc.reshape(n, c, out[0], width)[:, :, :, : out[1]])


def _conv_columns_last(x, w, kernel, strides, dilations, begin, end, out):
    """im2col with positions as rows: (positions, kh*kw*C) @ (kh*kw*C, M). When positions outnumber output
    channels, BLAS runs this orientation markedly faster here; the input goes channels-last once so that
    each kernel offset copies whole channel vectors."""
    n, c = x.shape[:2]
    m = w.shape[0]
    kh, kw = kernel
    oh, ow = out
    xp = np.ascontiguousarray(_padded(x, begin, end).transpose(0, 2, 3, 1))  # NHWC
    cols = np.empty((n, oh, ow, kh, kw, c), dtype=x.dtype)
    (sy, sx), (dy, dx) = strides, dilations

    def fill(r0, r1):
        for ky in range(kh):
            for kx in range(kw):
                rows = slice(ky * dy + r0 * sy, ky * dy + (r1 - 1) * sy + 1, sy)
                cols[:, r0:r1, :, ky, kx] = xp[:, rows, kx * dx : kx * dx + (ow - 1) * sx + 1 : sx]

    parallel_for(fill, oh, PARALLEL_MIN, ow * kh * kw * c)
    wt = np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(kh * kw * c, m))
    y = np.matmul(cols.reshape(n, oh * ow, kh * kw * c), wt)  # (n, positions, M)
    return np.ascontiguousarray(y.transpose(0, 2, 1))


@op("Conv")
def Conv(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None):
    kernel = list(kernel_shape or w.shape[2:])
    strides, dilations, begin, end, out = _geometry(x, kernel, auto_pad, pads, strides, dilations)
    n, c = x.shape[:2]
    m = w.shape[0]
    cg, mg = c // group, m // group
    positions = int(np.prod(out))
    ksize = int(np.prod(kernel))
    if ksize == 1 and all(s == 1 for s in strides) and not any(begin) and not any(end):
        # 1x1: the input already is the column matrix.
        y = np.matmul(w.reshape(group, mg, cg), x.reshape(n, group, cg, positions))
    elif len(kernel) == 2 and cg == 1 and mg == 1:
        y = _conv_depthwise(x, w, kernel, strides, dilations, begin, end, out)
    elif len(kernel) == 2 and group == 1 and strides == [1, 1] and positions >= 1024:
        y = _conv_shifted(x, w, kernel, dilations, begin, end, out)
    elif len(kernel) == 2 and group == 1 and positions >= 2 * m and c >= 16:
        y = _conv_columns_last(x, w, kernel, strides, dilations, begin, end, out)
    elif len(kernel) == 2:
        # im2col: columns (C/g * kh * kw, batch * positions) built one kernel offset at a time (contiguous
        # copies, split over threads by channel), then one matmul per group for the whole batch.
        xp = _padded(x, begin, end)
        cols = np.empty((c, kernel[0], kernel[1], n, *out), dtype=x.dtype)

        def fill(c0, c1):
            for ky, kx, view in _taps(xp[:, c0:c1], kernel, strides, dilations, out):
                cols[c0:c1, ky, kx] = view.transpose(1, 0, 2, 3)

        parallel_for(fill, c, PARALLEL_MIN, n * positions * ksize)
        y = np.matmul(w.reshape(group, mg, cg * ksize), cols.reshape(group, cg * ksize, n * positions))
        y = y.reshape(m, n, positions).transpose(1, 0, 2)
    else:
        win = _windows(x, kernel, strides, dilations, begin, end, out, 0)  # (N, C, *out, *k)
        spatial = list(range(2, 2 + len(out)))
        taps = list(range(2 + len(out), 2 + 2 * len(out)))
        cols = win.transpose(0, 1, *taps, *spatial).reshape(n, group, cg * ksize, positions)
        y = np.matmul(w.reshape(group, mg, cg * ksize), cols)
    y = y.reshape(n, m, *out)
    if b is not None:
        y += b.reshape(1, m, *[1] * len(out)).astype(y.dtype, copy=False)
    return y.astype(x.dtype, copy=False)


@op("ConvTranspose")
def ConvTranspose(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                  output_padding=None, output_shape=None, pads=None, strides=None):  # fmt: skip
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    nd = len(spatial)
    kernel = list(kernel_shape or w.shape[2:])
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    output_padding = list(output_padding or [0] * nd)
    mg = w.shape[1]
    m = mg * group
    full = [(i - 1) * s + (k - 1) * d + 1 + op_ for i, s, k, d, op_ in zip(spatial, strides, kernel, dilations,
                                                                           output_padding)]  # fmt: skip
    if output_shape is not None:
        wanted = list(output_shape)[-nd:]
        total = [f - o for f, o in zip(full, wanted)]
        if auto_pad == "SAME_LOWER":
            begin = [max(t - t // 2, 0) for t in total]
        else:
            begin = [max(t // 2, 0) for t in total]
        end = [f - bg - o for f, bg, o in zip(full, begin, wanted)]  # negative: zeros appended at the end
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = [f - i * s for f, i, s in zip(full, spatial, strides)]
        begin = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
        end = [t - bg for t, bg in zip(total, begin)]
    else:
        pads = list(pads or [0] * 2 * nd)
        begin, end = pads[:nd], pads[nd:]
    # Scatter each input pixel's contribution: cols[n, g, mg*k, positions] = W^T @ x.
    cg = c // group
    xg = x.reshape(n, group, cg, -1)
    wg = w.reshape(group, cg, mg * int(np.prod(kernel)))
    cols = np.matmul(wg.transpose(0, 2, 1), xg)  # (n, g, mg*K, P)
    cols = cols.reshape(n, group, mg, *kernel, *spatial)
    y = np.zeros((n, group, mg, *full), dtype=x.dtype)
    for tap in np.ndindex(*kernel):
        index = [slice(None)] * 3
        index += [slice(t * d, t * d + (i - 1) * s + 1, s) for t, d, i, s in zip(tap, dilations, spatial, strides)]
        y[tuple(index)] += cols[(slice(None), slice(None), slice(None), *tap)]
    y = y.reshape(n, m, *full)
    if any(e < 0 for e in end):
        y = np.pad(y, [(0, 0), (0, 0)] + [(0, max(-e, 0)) for e in end])
    crop = tuple(slice(bg, f - e) for bg, f, e in zip(begin, full, end))
    y = y[(slice(None), slice(None), *crop)]
    if b is not None:
        y = y + b.reshape(1, m, *[1] * nd)
    return y.astype(x.dtype, copy=False)


@op("MaxPool")
def MaxPool(x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape, pads=None, storage_order=0,
            strides=None, _num_outputs=1):  # fmt: skip
    strides, dilations, begin, end, out = _geometry(x, kernel_shape, auto_pad, pads, strides, dilations, ceil_mode)
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    if _num_outputs == 1 and len(kernel_shape) == 2:
        geometry = zip(out, strides, kernel_shape, dilations, x.shape[2:], begin, end)
        extra = [max((o - 1) * s + (k - 1) * d + 1 - size - b, e, 0) for o, s, k, d, size, b, e in geometry]
        xp = _padded(x, begin, extra, fill)
        y = None
        for _, _, view in _taps(xp, kernel_shape, strides, dilations, out):
            y = view.copy() if y is None else np.maximum(y, view, out=y)
        return y
    win = _windows(x, kernel_shape, strides, dilations, begin, end, out, fill)
    flat = win.reshape(*win.shape[: 2 + len(out)], -1)
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
    iwin = _windows(idx, kernel_shape, strides, dilations, begin, end, out, -1).reshape(flat.shape)
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
