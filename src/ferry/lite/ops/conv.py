"""Convolution: im2col + matmul and its special cases (1x1, depthwise, contiguous windows of stride phases).

Every path works through the output in blocks (a few images, or a few output rows of one image) whose
scratch (im2col columns, partial sums, padded phases) stays under `BLOCK_BYTES`. That keeps a kernel's
temporaries small next to the memory plan's arena, which would otherwise be dwarfed by them (an im2col
of the whole batch was 86 MiB on ResNet-18's first layer at batch 8), and keeps the blocks in cache.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..parallel import parallel_for
from ..registry import fills_out, op, slot
from .nn import _geometry, _padded, _windows

PARALLEL_MIN = 1 << 16  # elements below which splitting across threads costs more than it saves
BLOCK_BYTES = 4 << 20  # scratch per block; tests shrink it to run the blocked paths on small inputs


def _pieces(n: int, rows: int, row_bytes: int) -> Iterator[tuple[int, int, int, int]]:
    """Blocks (i0, i1, r0, r1) of images [i0, i1) and output rows [r0, r1) whose scratch, at `row_bytes`
    per output row, fits BLOCK_BYTES: several whole images while they fit, else rows of one image at a time."""
    image = rows * row_bytes
    if image <= BLOCK_BYTES:
        step = max(1, BLOCK_BYTES // max(image, 1))
        for i in range(0, n, step):
            yield i, min(n, i + step), 0, rows
        return
    step = max(1, BLOCK_BYTES // max(row_bytes, 1))
    for i in range(n):
        for r in range(0, rows, step):
            yield i, i + 1, r, min(rows, r + step)


class _Phases:
    """The padded input of a 2-D convolution split into stride phases, each flattened row by row.

    A stride-s convolution is stride 1 on the s*s phases, and under each kernel offset the input for a run
    of output rows is one contiguous window of a phase. Sums are computed on the phase width `wq`, and the
    `wq - ow` extra columns are dropped when a block is stored. Each phase is copied straight from the
    input into a zero-bordered buffer (no padded copy in between); with stride 1 the one phase is the
    padded input."""

    def __init__(self, x_shape, kernel, strides, dilations, begin, end, out):
        (kh, kw), (sy, sx), (dy, dx), (oh, ow) = kernel, strides, dilations, out
        height, width = x_shape[-2:]
        rows = max(height + begin[0] + end[0], (oh - 1) * sy + (kh - 1) * dy + 1)
        cols = max(width + begin[1] + end[1], (ow - 1) * sx + (kw - 1) * dx + 1)
        self.hq, self.wq = -(-rows // sy) + 1, -(-cols // sx)  # a spare row: windows run past the end
        self.count = sy * sx
        # For each kernel offset, row-major: the phase it reads and where its window starts.
        self.taps = [
            ((ky * dy % sy) * sx + kx * dx % sx, (ky * dy // sy) * self.wq + kx * dx // sx)
            for ky in range(kh)
            for kx in range(kw)
        ]
        # For each phase, where the input's rows and columns that fall into it land: phase row i holds
        # padded row py + i * sy, which is input row py + i * sy - begin.
        self.copies = []
        for py in range(sy):
            for px in range(sx):
                (i, r), (j, c) = (_first(p, b, s) for p, b, s in ((py, begin[0], sy), (px, begin[1], sx)))
                nr, nc = len(range(r, height, sy)), len(range(c, width, sx))
                self.copies.append((slice(i, i + nr), slice(j, j + nc), slice(r, height, sy), slice(c, width, sx)))

    def buffer(self, lead: tuple[int, ...], dtype) -> np.ndarray:
        """Zeroed phases for `lead` leading axes, (phases, *lead, hq, wq); `split` only writes interiors."""
        return np.zeros((self.count, *lead, self.hq, self.wq), dtype=dtype)

    def split(self, buffer: np.ndarray, x: np.ndarray) -> list[np.ndarray]:
        """The phases of x (whose leading axes match buffer's), each flattened to (*lead, hq * wq)."""
        for phase, (rows, cols, x_rows, x_cols) in zip(buffer, self.copies):
            phase[..., rows, cols] = x[..., x_rows, x_cols]
        return [phase.reshape(*phase.shape[:-2], -1) for phase in buffer]


def _first(phase: int, begin: int, stride: int) -> tuple[int, int]:
    """The first phase index whose padded position (phase + i * stride) is inside the input, and that
    input index."""
    i = max(0, -(-(begin - phase) // stride))
    return i, phase + i * stride - begin


def _conv_windows(y, x, w, layout: _Phases, out, group):
    """im2col from contiguous windows: for a block of output rows, the columns (C * kh * kw, images *
    positions) are one window copy per channel block and kernel offset (see _Phases), then one matmul per
    group. Measured 0.7-0.95x the time of im2col over strided views, shifted-window matmuls or a
    positions-first GEMM on ResNet-18's layers, but it pays for `wq - ow` wasted columns per output row."""
    n, c = x.shape[:2]
    m = w.shape[0]
    oh, ow = out
    wq, taps = layout.wq, len(layout.taps)
    phases = layout.split(layout.buffer((n, c), y.dtype), x)
    weights = w.reshape(group, m // group, c // group * taps)
    for i0, i1, r0, r1 in _pieces(n, oh, c * taps * wq * y.itemsize):
        length = (r1 - r0) * wq
        columns = np.empty((c, taps, i1 - i0, length), dtype=y.dtype)
        for k, (phase, start) in enumerate(layout.taps):
            start += r0 * wq
            columns[:, k] = phases[phase][i0:i1, :, start : start + length].transpose(1, 0, 2)
        part = np.matmul(weights, columns.reshape(group, c // group * taps, -1))  # (group, M/group, images * L)
        part = part.reshape(m, i1 - i0, r1 - r0, wq)[..., :ow]
        y[i0:i1, :, r0:r1] = part.transpose(1, 0, 2, 3)


def _conv_depthwise(y, x, w, b, layout: _Phases, out):
    """One filter per channel, as one small matrix product per (image, channel) plane: the filter and the
    bias, (1, k+1), times a column matrix (k+1, positions) of contiguous windows (see _Phases) whose last
    row is ones. numpy runs a block of planes' products in one batched call, which reads each window once:
    1.1-1.8x faster than a multiply and an add per kernel offset."""
    n, c = x.shape[:2]
    oh, ow = out
    taps, length, planes = len(layout.taps), oh * layout.wq, n * c
    dtype = y.dtype
    filters = np.empty((n, c, 1, taps + 1), dtype=dtype)
    filters[..., :taps] = w.reshape(1, c, 1, taps)
    filters[..., taps] = 0 if b is None else b.reshape(1, c, 1)
    filters = filters.reshape(planes, 1, taps + 1)
    planes_in, planes_out = x.reshape(planes, *x.shape[2:]), y.reshape(planes, oh, ow)
    # A quarter of the block budget: 1 MiB of columns measured fastest, against 192 KiB and 4 MiB.
    group = min(planes, max(1, BLOCK_BYTES // 4 // ((taps + 1) * length * dtype.itemsize)))
    padded = layout.buffer((group,), dtype)
    columns = np.empty((group, taps + 1, length), dtype=dtype)
    columns[:, taps] = 1
    sums = np.empty((group, 1, length), dtype=dtype)
    for p0 in range(0, planes, group):
        g = min(group, planes - p0)
        phases = layout.split(padded[:, :g], planes_in[p0 : p0 + g])
        for k, (phase, start) in enumerate(layout.taps):
            columns[:g, k] = phases[phase][:, start : start + length]
        np.matmul(filters[p0 : p0 + g], columns[:g], out=sums[:g])
        planes_out[p0 : p0 + g] = sums[:g].reshape(g, oh, layout.wq)[:, :, :ow]


def _conv_im2col(y, x, w, kernel, strides, dilations, begin, end, out, group):
    """im2col with channels as rows: columns (C/g * kh * kw, images * positions) built one kernel offset at a
    time (contiguous copies, split over threads by channel), then one matmul per group for the block."""
    n, c = x.shape[:2]
    m = w.shape[0]
    cg, mg = c // group, m // group
    (kh, kw), (sy, sx), (dy, dx), (oh, ow) = kernel, strides, dilations, out
    xp = _padded(x, begin, end)
    wg = w.reshape(group, mg, cg * kh * kw)
    y = y.reshape(n, m, oh * ow)
    for i0, i1, r0, r1 in _pieces(n, oh, c * kh * kw * ow * x.itemsize):
        cols = np.empty((c, kh, kw, i1 - i0, r1 - r0, ow), dtype=x.dtype)

        def fill(c0, c1, i0=i0, r0=r0, cols=cols):
            for ky in range(kh):
                for kx in range(kw):
                    rows = slice(ky * dy + r0 * sy, ky * dy + (r0 + cols.shape[4] - 1) * sy + 1, sy)
                    view = xp[i0 : i0 + cols.shape[3], c0:c1, rows, kx * dx : kx * dx + (ow - 1) * sx + 1 : sx]
                    cols[c0:c1, ky, kx] = view.transpose(1, 0, 2, 3)

        parallel_for(fill, c, PARALLEL_MIN, cols.size // c)
        part = np.matmul(wg, cols.reshape(group, cg * kh * kw, -1))  # (group, mg, images * positions)
        y[i0:i1, :, r0 * ow : r1 * ow] = part.reshape(m, i1 - i0, -1).transpose(1, 0, 2)


@op("Conv")
@fills_out
def Conv(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None,
         out=None):  # fmt: skip
    """`out`: where to write the result (an arena slot), used when it has the result's shape and dtype."""
    kernel = list(kernel_shape or w.shape[2:])
    strides, dilations, begin, end, sizes = _geometry(x, kernel, auto_pad, pads, strides, dilations)
    n, c = x.shape[:2]
    m = w.shape[0]
    cg, mg = c // group, m // group
    positions = int(np.prod(sizes))
    ksize = int(np.prod(kernel))
    dtype = np.result_type(x, w)
    shape = (n, m, *sizes)
    y = slot(out, shape, dtype)
    y = np.empty(shape, dtype=dtype) if y is None else y
    if ksize == 1 and all(s == 1 for s in strides) and not any(begin) and not any(end):
        # 1x1: the input already is the column matrix.
        np.matmul(w.reshape(group, mg, cg), x.reshape(n, group, cg, positions), out=y.reshape(n, group, mg, positions))
    elif len(kernel) == 2:
        layout = _Phases(x.shape, kernel, strides, dilations, begin, end, sizes)
        if cg == 1 and mg == 1:
            _conv_depthwise(y, x, w, b, layout, sizes)
            b = None  # added with the filter
        elif layout.wq <= 1.15 * sizes[1]:
            _conv_windows(y, x, w, layout, sizes, group)
        else:  # small images, where the windows' extra columns would cost more than strided copies
            _conv_im2col(y, x, w, kernel, strides, dilations, begin, end, sizes, group)
    else:
        win = _windows(x, kernel, strides, dilations, begin, end, sizes, 0)  # (N, C, *out, *k)
        spatial = list(range(2, 2 + len(sizes)))
        taps = list(range(2 + len(sizes), 2 + 2 * len(sizes)))
        cols = win.transpose(0, 1, *taps, *spatial).reshape(n, group, cg * ksize, positions)
        np.matmul(w.reshape(group, mg, cg * ksize), cols, out=y.reshape(n, group, mg, positions))
    if b is not None:
        y += b.reshape(1, m, *[1] * len(sizes)).astype(y.dtype, copy=False)
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
