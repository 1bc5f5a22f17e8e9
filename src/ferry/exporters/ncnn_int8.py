"""int8 ncnn files from calibration data: what ncnn's `ncnn2table` and `ncnn2int8` do, written here.

Those two tools are built with ncnn's C++ tree and ship in no package this project can install (not in
the `ncnn` wheel, not in Debian), so ferry writes the same files itself, by ncnn's rules (tools/quantize
in ncnn's sources, July 2026):

- which layers: Convolution, ConvolutionDepthWise, InnerProduct (what ncnn2int8 quantizes for CNNs);
- weight scales per output channel (per group for depthwise), 127 / max|w|, and 31 / max|w| for 3x3
  stride-1 convolutions (ncnn's int8 Winograd F(4,3) needs 6-bit weights);
- one activation scale per layer input, 127 / threshold, the threshold by ncnn2table's KL method
  (2048-bin histogram of |x| over the calibration samples, the clip with the least KL divergence from
  its 128-level quantization);
- the files: `8=<int8_scale_term>` on the layer's line, the weights as int8 (tag 0x000D4B38), the
  scales after the bias, as `ModelWriter` writes them.

Where each layer's weights lie in the .bin is learnt from ncnn itself: every layer loads its weights
from a recording `ncnn.ModelBin`, which lists the blobs it asks for, in order.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferry.errors import ConversionError

SCALE_TERMS = {"Convolution": 2, "ConvolutionDepthWise": 1, "InnerProduct": 2}  # layer -> int8_scale_term
_FP16, _INT8, _RAW = 0x01306B47, 0x000D4B38, 0x0002C056  # ModelBin's tags for a tagged blob
BINS, LEVELS = 2048, 128  # ncnn2table's KL histogram and target levels
_EPS = 1e-4


@dataclass
class Layer:
    kind: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[int, str]  # ncnn's `id=value` pairs, values as written

    def param(self, key: int, default: int) -> int:
        return int(self.params[key]) if key in self.params else default

    def line(self) -> str:
        fields = [self.kind, self.name, str(len(self.bottoms)), str(len(self.tops)), *self.bottoms, *self.tops]
        return " ".join(fields + [f"{k}={v}" for k, v in self.params.items()])


@dataclass
class Blob:
    """One weight blob a layer loads: `count` values, `tagged` (type 0: a 4-byte tag, then the data) or
    raw float32 (type 1), and its bytes in the .bin."""

    count: int
    tagged: bool
    data: bytes

    def values(self) -> np.ndarray:
        if not self.tagged:
            return np.frombuffer(self.data, np.float32, self.count)
        tag = struct.unpack_from("<I", self.data)[0]
        if tag in (0, _RAW):
            return np.frombuffer(self.data, np.float32, self.count, offset=4)
        if tag == _FP16:
            return np.frombuffer(self.data, np.float16, self.count, offset=4).astype(np.float32)
        raise ConversionError(f"an ncnn weight blob stored as {tag:#x} (int8 or a lookup table) cannot be requantized")


def read_param(path: Path) -> tuple[list[str], list[Layer]]:
    """The two header lines (magic; layer and blob counts) and the layers of an ncnn .param file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    layers = []
    for line in lines[2:]:
        parts = line.split()
        if len(parts) < 4:
            continue
        kind, name, n_in, n_out = parts[0], parts[1], int(parts[2]), int(parts[3])
        blobs = parts[4 : 4 + n_in + n_out]
        params = dict(p.split("=", 1) for p in parts[4 + n_in + n_out :])
        layers.append(Layer(kind, name, blobs[:n_in], blobs[n_in:], {int(k): v for k, v in params.items()}))
    return lines[:2], layers


def write_param(path: Path, header: list[str], layers: list[Layer]) -> None:
    text = "\n".join([*header, *(layer.line() for layer in layers)])
    path.write_text(text + "\n", encoding="utf-8")


def blob_requests(param: Path) -> list[list[tuple[int, int]]]:
    """Per layer, the (count, type) of each blob ncnn's own `load_model` of that layer reads."""
    import ncnn

    class Recorder(ncnn.ModelBin):
        def __init__(self) -> None:
            super().__init__()
            self.asked: list[tuple[int, int]] = []

        def load(self, w: int, type: int) -> Any:  # noqa: A002 (ncnn's argument name)
            self.asked.append((int(w), int(type)))
            return ncnn.Mat(int(w))

    net = ncnn.Net()
    if net.load_param(str(param)) != 0:
        raise ConversionError(f"ncnn could not read {param}")
    requests = []
    for layer in net.layers():
        recorder = Recorder()
        layer.load_model(recorder)
        requests.append(recorder.asked)
    return requests


def split_bin(data: bytes, requests: list[list[tuple[int, int]]]) -> list[list[Blob]]:
    """The .bin cut into each layer's blobs, as ncnn's ModelBinFromDataReader reads them."""
    offset, layers = 0, []
    for asked in requests:
        blobs = []
        for count, kind in asked:
            if kind == 1:
                size = 4 * count
            else:
                tag = struct.unpack_from("<I", data, offset)[0]
                flag = sum(data[offset : offset + 4])
                if tag == _FP16:
                    size = 4 + _align(2 * count)
                elif tag == _INT8:
                    size = 4 + _align(count)
                elif tag == _RAW or flag == 0:
                    size = 4 + 4 * count
                else:  # a 256-entry lookup table, then one byte a value
                    size = 4 + 1024 + _align(count)
            if offset + size > len(data):
                raise ConversionError(f"the ncnn .bin ends at byte {len(data)}; its layers ask for more")
            blobs.append(Blob(count, kind == 0, data[offset : offset + size]))
            offset += size
        layers.append(blobs)
    if offset != len(data):
        raise ConversionError(f"the ncnn layers read {offset} bytes of a {len(data)}-byte .bin")
    return layers


def quantizable(layers: list[Layer]) -> list[int]:
    """Indexes of the layers ncnn runs in int8: the kinds above, with their weights in the file."""
    return [i for i, layer in enumerate(layers) if layer.kind in SCALE_TERMS and layer.param(19, 0) == 0]


def int8_successors(layers: list[Layer], chosen: list[int]) -> dict[int, str]:
    """{convolution: the blob whose scale its int8 output takes}, where every consumer of its output is an
    int8 convolution, directly or through a Split (ncnn2int8's fuse_requantize; ncnn graphs fan out
    through Split layers only). Those layers hand int8 on instead of float."""
    convolutions = {layers[i].bottoms[0] for i in chosen if layers[i].kind != "InnerProduct"}  # their inputs
    splits = {layer.bottoms[0]: layer for layer in layers if layer.kind == "Split"}
    fused = {}
    for i in chosen:
        if layers[i].kind == "InnerProduct":
            continue
        top = layers[i].tops[0]
        if top in convolutions:
            fused[i] = top
        elif top in splits and all(t in convolutions for t in splits[top].tops):
            fused[i] = splits[top].tops[0]  # the same values on every branch: the same scale
    return fused


def weight_scales(layer: Layer, weights: np.ndarray) -> np.ndarray:
    """ncnn2table's per-channel (per-group for depthwise) weight scales."""
    if layer.kind == "ConvolutionDepthWise":
        rows, levels = layer.param(7, 1), 127
    else:
        rows = layer.param(0, 0)
        kernel = (layer.param(1, 0), layer.param(11, layer.param(1, 0)))
        dilation = (layer.param(2, 1), layer.param(12, layer.param(2, 1)))
        stride = (layer.param(3, 1), layer.param(13, layer.param(3, 1)))
        winograd = layer.kind == "Convolution" and kernel == (3, 3) and dilation == (1, 1) and stride == (1, 1)
        levels = 31 if winograd else 127
    absmax = np.abs(weights.reshape(rows, -1)).max(axis=1)
    return np.where(absmax > 0, levels / np.maximum(absmax, 1e-30), 1.0).astype(np.float32)


def to_int8(weights: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """ncnn's float2int8: round half away from zero, clamp to +-127."""
    scaled = weights.reshape(len(scales), -1).astype(np.float64) * scales[:, None]
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    return np.clip(rounded, -127, 127).astype(np.int8).reshape(-1)


def kl_threshold(histogram: np.ndarray) -> int:
    """ncnn2table's KL choice: the clip bin (LEVELS..BINS-1) whose clipped histogram is closest, in KL
    divergence, to its LEVELS-level quantization expanded back. Vectorised, 256 clips at a time; the
    fractional bin edges are the cumulative histogram's linear interpolation, as ncnn splits them."""
    normed = histogram / max(histogram.sum(), 1)
    cumulative = np.concatenate([[0.0], np.cumsum(normed)])
    best, best_kl = LEVELS, np.inf
    for start in range(LEVELS, BINS, 256):  # 256 clips a chunk: (256, BINS) arrays
        clips = np.arange(start, min(start + 256, BINS))[:, None].astype(np.float64)
        width = clips / LEVELS
        edges = np.arange(LEVELS + 1)[None, :] * width  # (n, LEVELS + 1)
        mass_at_edges = np.interp(edges, np.arange(BINS + 1), cumulative)
        k = np.arange(BINS + 1)[None, :].astype(np.float64)  # integer points 0..BINS
        level = np.minimum(np.floor(k / width), LEVELS - 1)
        low = np.take_along_axis(mass_at_edges, level.astype(int), axis=1)
        high = np.take_along_axis(mass_at_edges, level.astype(int) + 1, axis=1)
        at_k = low + (high - low) * (k - level * width) / width  # quantized mass up to k
        expanded = np.diff(at_k, axis=1) + _EPS  # (n, BINS)
        inside = np.arange(BINS)[None, :] < clips
        clipped = np.where(inside, normed[None, :] + _EPS, 0.0)
        last = clips.astype(int)[:, 0] - 1
        rows = np.arange(len(clips))
        clipped[rows, last] += cumulative[-1] - cumulative[last + 1]  # the tail goes to the last kept bin
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(inside, clipped * np.log(clipped / expanded), 0.0)
        kl = terms.sum(axis=1)
        i = int(np.argmin(kl))
        if kl[i] < best_kl:
            best, best_kl = int(clips[i, 0]), float(kl[i])
    return best


def activation_scales(net: Any, inputs: dict[str, str], samples: list[dict[str, np.ndarray]], blobs: list[str],
                      progress: bool = False) -> dict[str, float]:  # fmt: skip
    """127 / threshold for each blob, from two passes over the samples (max |x|, then the histogram)."""
    absmax = dict.fromkeys(blobs, 0.0)
    for values in _extract(net, inputs, samples, blobs, "ncnn int8: ranges" if progress else ""):
        for name, array in values.items():
            absmax[name] = max(absmax[name], float(np.abs(array).max(initial=0.0)))
    histograms = {name: np.zeros(BINS, np.int64) for name in blobs}
    for values in _extract(net, inputs, samples, blobs, "ncnn int8: histograms" if progress else ""):
        for name, array in values.items():
            magnitude = np.abs(array[array != 0])
            if absmax[name] > 0 and magnitude.size:
                index = np.minimum((magnitude / absmax[name] * BINS).astype(np.int64), BINS - 1)
                histograms[name] += np.bincount(index, minlength=BINS)
    scales = {}
    for name in blobs:
        if absmax[name] == 0 or histograms[name].sum() == 0:
            scales[name] = 1.0  # all zeros: any scale is exact
            continue
        threshold = (kl_threshold(histograms[name]) + 0.5) * absmax[name] / BINS
        scales[name] = 127.0 / threshold
    return scales


def _extract(
    net: Any, inputs: dict[str, str], samples: list[dict[str, np.ndarray]], blobs: list[str], label: str
) -> Iterator[dict[str, np.ndarray]]:
    """Each sample's values of `blobs`; a progress bar named `label` unless that is empty."""
    import ncnn

    if label:
        from rich.progress import track

        samples = track(samples, description=label, transient=True)  # type: ignore[assignment]
    for sample in samples:
        ex = net.create_extractor()
        ex.set_light_mode(False)  # keep every blob: several are read from one run
        # ncnn.Mat borrows the array's memory: the converted arrays stay referenced until the extracts
        held = {n: np.ascontiguousarray(v, dtype=np.float32 if v.dtype.kind == "f" else np.int32)
                for n, v in sample.items()}  # fmt: skip
        for name, value in held.items():
            ex.input(inputs[name], ncnn.Mat(value))
        values = {}
        for blob in blobs:
            status, mat = ex.extract(blob)
            if status != 0:
                raise ConversionError(f"ncnn could not compute blob {blob!r} for calibration (status {status})")
            values[blob] = np.array(mat)
        yield values


def quantize_files(param: Path, weights: Path, inputs: dict[str, str], samples: list[dict[str, np.ndarray]],
                   threads: int = 2, progress: bool = False) -> int:  # fmt: skip
    """Rewrite `param` and `weights` (an fp32 or fp16 ncnn model) as int8 from `samples` (one dict of
    per-sample arrays each, named as the package's inputs); returns how many layers went int8."""
    import ncnn

    header, layers = read_param(param)
    chosen = quantizable(layers)
    if not chosen:
        raise ConversionError("the model has no Convolution or InnerProduct layer for ncnn to run in int8")
    blobs = split_bin(weights.read_bytes(), blob_requests(param))
    net = ncnn.Net()
    net.opt.num_threads = threads
    if net.load_param(str(param)) != 0 or net.load_model(str(weights)) != 0:
        raise ConversionError(f"ncnn could not load {param.name} for calibration")
    bottoms = list(dict.fromkeys(layers[i].bottoms[0] for i in chosen))  # in the order ncnn computes them
    scales = activation_scales(net, inputs, samples, bottoms, progress)
    requantized = int8_successors(layers, chosen)
    for i in chosen:
        layer, (weight, *rest) = layers[i], blobs[i]
        values = weight.values()
        w_scales = weight_scales(layer, values)
        packed = to_int8(values, w_scales).tobytes()
        packed += b"\0" * (_align(len(packed)) - len(packed))
        added = w_scales.tobytes() + np.float32(scales[layer.bottoms[0]]).tobytes()
        next_scale = requantized.get(i)
        if next_scale is not None:  # ncnn2int8's fuse_requantize: the output stays int8 for the next layer
            added += np.float32(scales[next_scale]).tobytes()
        blobs[i] = [Blob(weight.count, True, struct.pack("<I", _INT8) + packed), *rest, Blob(0, False, added)]
        layer.params[8] = str(SCALE_TERMS[layer.kind] + (100 if next_scale is not None else 0))
    write_param(param, header, layers)
    weights.write_bytes(b"".join(blob.data for layer_blobs in blobs for blob in layer_blobs))
    return len(chosen)


def _align(size: int) -> int:
    return (size + 3) // 4 * 4
