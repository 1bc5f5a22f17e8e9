"""ncnn's int8 files written by ferry (ncnn2table's scales, ncnn2int8's layout): the pieces against ncnn's
rules; the whole export is tested in test_device.py."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from ferry.errors import ConversionError
from ferry.exporters import ncnn_int8
from ferry.exporters.ncnn_int8 import BINS, LEVELS, Layer

PARAM = """7767517
5 5
Input in0 0 1 in0 0=4 1=4 2=2
Convolution conv 1 1 in0 c 0=3 1=3 4=1 5=1 6=54
BatchNorm bn 1 1 c b 0=3
Flatten flat 1 1 b f
InnerProduct fc 1 1 f out0 0=2 1=0 2=96
"""


def tagged(values: np.ndarray, tag: int, dtype: type) -> bytes:
    data = struct.pack("<I", tag) + values.astype(dtype).tobytes()
    return data + b"\0" * (-len(data) % 4)


def test_the_bin_is_cut_where_ncnn_reads_each_layers_blobs(tmp_path):
    rng = np.random.default_rng(0)
    conv_w, conv_b = rng.standard_normal(54), rng.standard_normal(3)
    bn = [rng.standard_normal(3) for _ in range(4)]  # slope, mean, variance, bias: raw float32
    fc_w = rng.standard_normal(96)
    data = tagged(conv_w, 0x01306B47, np.float16) + conv_b.astype(np.float32).tobytes()
    data += b"".join(v.astype(np.float32).tobytes() for v in bn) + tagged(fc_w, 0, np.float32)
    (tmp_path / "m.param").write_text(PARAM)
    requests = ncnn_int8.blob_requests(tmp_path / "m.param")
    assert requests == [[], [(54, 0), (3, 1)], [(3, 1)] * 4, [], [(96, 0)]]
    layers = ncnn_int8.split_bin(data, requests)
    assert b"".join(b.data for blobs in layers for b in blobs) == data
    np.testing.assert_allclose(layers[1][0].values(), conv_w.astype(np.float16), rtol=0)
    np.testing.assert_allclose(layers[4][0].values(), fc_w.astype(np.float32), rtol=0)
    with pytest.raises(ConversionError, match="ends at byte"):
        ncnn_int8.split_bin(data[:-8], requests)
    with pytest.raises(ConversionError, match=f"read {len(data)} bytes of a {len(data) + 4}-byte"):
        ncnn_int8.split_bin(data + b"\0" * 4, requests)


def test_param_lines_round_trip(tmp_path):
    (tmp_path / "m.param").write_text(PARAM)
    header, layers = ncnn_int8.read_param(tmp_path / "m.param")
    assert header == ["7767517", "5 5"] and [layer.kind for layer in layers][1:3] == ["Convolution", "BatchNorm"]
    assert layers[1].params == {0: "3", 1: "3", 4: "1", 5: "1", 6: "54"} and layers[1].bottoms == ["in0"]
    ncnn_int8.write_param(tmp_path / "again.param", header, layers)
    assert (tmp_path / "again.param").read_text().split() == PARAM.split()


@pytest.mark.parametrize(
    "kind,params,levels,rows",
    [
        ("Convolution", {0: "4", 1: "3", 6: "72"}, 31, 4),  # 3x3 stride 1: 6-bit, for int8 Winograd
        ("Convolution", {0: "4", 1: "3", 3: "2", 6: "72"}, 127, 4),  # stride 2
        ("Convolution", {0: "4", 1: "1", 6: "8"}, 127, 4),
        ("ConvolutionDepthWise", {0: "4", 1: "3", 6: "36", 7: "4"}, 127, 4),  # one scale a group
        ("InnerProduct", {0: "2", 2: "10"}, 127, 2),
    ],
)
def test_weight_scales_follow_ncnn2table(kind, params, levels, rows):
    weights = np.random.default_rng(1).standard_normal(int(params.get(6, params.get(2)))).astype(np.float32)
    weights[: weights.size // rows] = 0  # a channel of zeros gets scale 1
    scales = ncnn_int8.weight_scales(Layer(kind, "l", ["a"], ["b"], {int(k): v for k, v in params.items()}), weights)
    expected = levels / np.abs(weights.reshape(rows, -1)).max(axis=1)[1:]
    assert scales[0] == 1.0 and scales.shape == (rows,)
    np.testing.assert_allclose(scales[1:], expected, rtol=1e-6)
    assert np.abs(ncnn_int8.to_int8(weights, scales)).max() == levels


def test_to_int8_rounds_half_away_from_zero_and_clamps():
    values = np.array([0.5, -0.5, 2.5, -2.5, 0.49, 200.0, -200.0], np.float32)
    assert ncnn_int8.to_int8(values, np.ones(1, np.float32)).tolist() == [1, -1, 3, -3, 0, 127, -127]


def ncnn2table_kl(histogram: np.ndarray) -> int:
    """ncnn2table's KL loop (tools/quantize/ncnn2table.cpp) written out bin by bin: the reference."""
    h, eps = histogram / histogram.sum(), 1e-4
    best, best_kl = LEVELS, math.inf
    for t in range(LEVELS, BINS):
        clip = [eps + h[j] for j in range(t)]
        clip[t - 1] += h[t:].sum()
        npb = t / LEVELS
        q = [0.0] * LEVELS
        for j in range(LEVELS):  # quantize: each level's mass over its (fractional) bins, per bin
            start, end = j * npb, min((j + 1) * npb, t)
            lu, rl = math.ceil(start), math.floor(end)
            q[j] = (lu - start) * h[lu - 1] if lu > start else 0.0
            q[j] += (end - rl) * h[rl] if end > rl and rl < BINS else 0.0
            q[j] = (q[j] + h[lu:rl].sum()) / (end - start)
        e = [eps] * t
        for j in range(LEVELS):  # expand back
            start, end = j * npb, min((j + 1) * npb, t)
            lu, rl = math.ceil(start), math.floor(end)
            if lu > start:
                e[lu - 1] += (lu - start) * q[j]
            if end > rl and rl < t:
                e[rl] += (end - rl) * q[j]
            for k in range(lu, rl):
                e[k] += q[j]
        kl = sum(a * math.log(a / b) for a, b in zip(clip, e))
        if kl < best_kl:
            best, best_kl = t, kl
    return best


@pytest.mark.parametrize("power", [1, 3])
def test_the_kl_threshold_is_ncnn2tables(power):
    x = np.abs(np.random.default_rng(power).standard_normal(20000)) ** power
    histogram = np.bincount(np.minimum((x / x.max() * BINS).astype(int), BINS - 1), minlength=BINS)
    chosen = ncnn_int8.kl_threshold(histogram)
    assert chosen == ncnn2table_kl(histogram.astype(np.float64))
    assert LEVELS <= chosen < BINS - 1  # heavy tails get clipped


def test_a_model_without_int8_layers_is_an_error(tmp_path):
    (tmp_path / "m.param").write_text("7767517\n2 2\nInput in0 0 1 in0 0=4\nReLU relu 1 1 in0 out0\n")
    (tmp_path / "m.bin").write_bytes(b"")
    with pytest.raises(ConversionError, match="no Convolution or InnerProduct layer"):
        ncnn_int8.quantize_files(tmp_path / "m.param", tmp_path / "m.bin", {"x": "in0"}, [{"x": np.zeros(4)}])


def test_int8_outputs_stay_int8_where_every_consumer_is_an_int8_convolution():
    def layer(kind, name, bottoms, tops):
        return Layer(kind, name, bottoms, tops, {})

    layers = [
        layer("Input", "in", [], ["x"]),
        layer("Convolution", "c0", ["x"], ["a"]),
        layer("ConvolutionDepthWise", "d1", ["a"], ["b"]),  # c0 -> d1: fused
        layer("Split", "s", ["b"], ["b0", "b1"]),  # d1 -> split -> two convolutions: fused
        layer("Convolution", "c2", ["b0"], ["c"]),
        layer("Convolution", "c3", ["b1"], ["d"]),
        layer("Split", "t", ["c"], ["c0", "c1"]),  # c2 -> split -> a convolution and an add: not fused
        layer("Convolution", "c4", ["c0"], ["e"]),
        layer("BinaryOp", "add", ["c1", "e"], ["f"]),
        layer("InnerProduct", "fc", ["f"], ["g"]),  # the last: its output is float
    ]
    chosen = ncnn_int8.quantizable(layers)
    assert ncnn_int8.int8_successors(layers, chosen) == {1: "a", 2: "b0"}
