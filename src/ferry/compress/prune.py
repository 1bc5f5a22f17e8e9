"""Pruning, done on the ONNX graph.

- magnitude (unstructured): the smallest weights of each Conv/Gemm/MatMul are set to zero. The dense file
  is as large as before and no faster; the win is sparsity, which shows as a smaller compressed file. The
  report says exactly that.
- structured (channels): whole filters of a Conv (or output units of a Gemm) with the smallest L1 norm are
  removed, with the matching input channels of the next Conv or Gemm (through per-channel ops such as
  ReLU, BatchNormalization and pooling, and through Flatten into a Gemm). The layers get smaller, so the
  model is faster; there is no fine-tuning, so accuracy is measured and the guard lowers the ratio until
  the drop fits.
"""

from __future__ import annotations

import gzip
import io
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ferry.compress.report import speed
from ferry.errors import ConfigError
from ferry.optimize.ir import Index, attr, set_initializer
from ferry.package.package import derive, swap_in

PER_CHANNEL = {"Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu",
               "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization", "Dropout",
               "Identity"}  # fmt: skip


def magnitude(model: onnx.ModelProto, sparsity: float) -> int:
    """Zero the `sparsity` fraction of smallest-magnitude weights of each Conv/Gemm/MatMul weight tensor."""
    index = Index(model.graph)
    pruned = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        w = index.const(node.input[1])
        if w is None or w.ndim < 2 or node.input[1] not in index.inits:
            continue
        cut = np.quantile(np.abs(w), sparsity)
        w = np.where(np.abs(w) <= cut, 0, w).astype(w.dtype)
        set_initializer(model.graph, node.input[1], w)
        pruned += 1
    return pruned


@dataclass
class _Chain:
    producer: onnx.NodeProto
    passthrough: list[onnx.NodeProto]
    consumer: onnx.NodeProto
    flatten: onnx.NodeProto | None = None


def _chains(model: onnx.ModelProto) -> list[_Chain]:
    index = Index(model.graph)
    found = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or node.input[1] not in index.inits:
            continue
        if node.op_type == "Conv" and attr(node, "group", 1) != 1:
            continue
        if node.op_type == "Gemm" and (attr(node, "transA", 0) or not attr(node, "transB", 0)):
            continue  # Gemm output units are rows of a transB weight; others are left alone
        chain, cur, flatten = [], node.output[0], None
        while True:
            nxt = index.sole_consumer(cur)
            if nxt is None:
                break
            if nxt.op_type in PER_CHANNEL and nxt.input[0] == cur:
                if nxt.op_type == "BatchNormalization" and any(n not in index.inits for n in nxt.input[1:5]):
                    break
                chain.append(nxt)
                cur = nxt.output[0]
                continue
            if nxt.op_type == "Flatten" and node.op_type == "Conv" and flatten is None:
                flatten = nxt
                cur = nxt.output[0]
                continue
            ok_conv = nxt.op_type == "Conv" and attr(nxt, "group", 1) == 1 and flatten is None
            ok_gemm = (
                nxt.op_type == "Gemm" and not attr(nxt, "transA", 0) and (flatten is not None or node.op_type == "Gemm")
            )
            if (ok_conv or ok_gemm) and nxt.input[0] == cur and nxt.input[1] in index.inits:
                found.append(_Chain(node, chain, nxt, flatten))
            break
    return found


def _shape(model: onnx.ModelProto, name: str) -> list[int] | None:
    inferred = onnx.shape_inference.infer_shapes(model)
    for v in list(inferred.graph.value_info) + list(inferred.graph.output):
        if v.name == name:
            return [d.dim_value for d in v.type.tensor_type.shape.dim]
    return None


def structured(
    model: onnx.ModelProto, ratio: float, consumers: list[str] | None = None, kept: dict | None = None
) -> list[str]:
    """Remove `ratio` of the channels of every prunable layer; returns a line per layer pruned. The names
    of the layers that lost input channels are appended to `consumers`; `kept` gets, per pruned layer,
    the indices of the output channels it kept."""
    graph = model.graph
    lines = []
    for node in graph.node:
        if not node.name:
            node.name = f"{node.op_type}_{node.output[0]}"
    for chain in _chains(model):
        index = Index(graph)
        p = chain.producer
        w = index.const(p.input[1])
        rows = w.shape[0]
        norms = np.abs(w.reshape(rows, -1)).sum(axis=1)
        keep = np.sort(np.argsort(-norms, kind="stable")[: max(1, int(round(rows * (1 - ratio))))])
        if len(keep) == rows:
            continue
        spatial = 1
        if chain.flatten is not None:
            shape = _shape(model, chain.flatten.input[0])
            if not shape or len(shape) < 2 or any(d <= 0 for d in shape[2:]):
                continue
            spatial = int(np.prod(shape[2:]))
        set_initializer(graph, p.input[1], w[keep])
        if len(p.input) > 2 and p.input[2]:
            set_initializer(graph, p.input[2], index.const(p.input[2])[keep])
        for bn in chain.passthrough:
            if bn.op_type == "BatchNormalization":
                for name in bn.input[1:5]:
                    set_initializer(graph, name, index.const(name)[keep])
        c = chain.consumer
        wc = index.const(c.input[1])
        if c.op_type == "Conv":
            set_initializer(graph, c.input[1], wc[:, keep])
        else:
            features = (keep[:, None] * spatial + np.arange(spatial)[None, :]).reshape(-1)
            set_initializer(graph, c.input[1], wc[:, features] if attr(c, "transB", 0) else wc[features])
        lines.append(f"{p.name or p.output[0]}: {rows} -> {len(keep)} channels")
        if consumers is not None:
            consumers.append(c.name)
        if kept is not None:
            kept[p.name] = keep
    del graph.value_info[:]  # shapes changed; ferry.save infers them again
    return lines


def _patches(x: np.ndarray, node: onnx.NodeProto, kernel: list[int]) -> np.ndarray:
    """(N * positions, C * kh * kw) input patches of a 2-D Conv, in its weight layout."""
    from ferry.lite.ops.nn import _geometry, _windows

    strides, dilations, begin, end, out = _geometry(x, kernel, attr(node, "auto_pad", "NOTSET"), attr(node, "pads"),
                                                    attr(node, "strides"), attr(node, "dilations"))  # fmt: skip
    win = _windows(x, kernel, strides, dilations, begin, end, out, 0)  # (N, C, oh, ow, kh, kw)
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(-1, x.shape[1] * int(np.prod(kernel)))


def refit(pruned: onnx.ModelProto, original: onnx.ModelProto, consumers: list[str], feeds: list[dict],
          kept: dict) -> None:  # fmt: skip
    """Least-squares reconstruction (as in channel pruning by He et al., 2017): refit each consumer layer so
    that, from the channels left, it reproduces the original model's output of that layer on `feeds`.
    Consumers go in graph order, each seeing the inputs of the already-refitted layers before it."""
    from ferry.compress.sensitivity import run_tensors

    for name in consumers:
        node = next(n for n in pruned.graph.node if n.name == name or n.output[0] == name)
        target = np.concatenate(run_tensors(original, [node.output[0]], feeds)[node.output[0]])
        if node.name in kept:  # this layer lost output channels too: reproduce the ones it kept
            target = target[:, kept[node.name]]
        x = np.concatenate(run_tensors(pruned, [node.input[0]], feeds)[node.input[0]]).astype(np.float64)
        index = Index(pruned.graph)
        w = index.const(node.input[1])
        has_bias = len(node.input) > 2 and bool(node.input[2])
        if node.op_type == "Conv":
            kernel = list(w.shape[2:])
            if len(kernel) != 2:
                continue
            a = _patches(x, node, kernel)
            y = target.transpose(0, 2, 3, 1).reshape(-1, w.shape[0]).astype(np.float64)
        else:
            a, y = x.reshape(len(x), -1), target.reshape(len(target), -1).astype(np.float64)
        design = np.hstack([a, np.ones((len(a), 1))]) if has_bias else a
        solution, *_ = np.linalg.lstsq(design, y, rcond=None)
        new_w = solution[: a.shape[1]].T  # (out, in)
        if node.op_type == "Conv":
            set_initializer(pruned.graph, node.input[1], new_w.reshape(w.shape).astype(w.dtype))
        else:
            set_initializer(
                pruned.graph, node.input[1], (new_w if attr(node, "transB", 0) else new_w.T).astype(w.dtype)
            )
        if has_bias:
            set_initializer(pruned.graph, node.input[2], solution[-1].astype(w.dtype))


def compressed_bytes(model: onnx.ModelProto) -> int:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as f:
        f.write(model.SerializeToString())
    return buffer.tell()


@dataclass
class PruneResult:
    package: Any
    method: str
    ratio: float
    layers: list[str]
    size_before: int
    size_after: int
    gzip_before: int
    gzip_after: int
    metric: str | None
    accuracy_before: float | None
    accuracy_after: float | None
    latency_before: float
    latency_after: float
    batch: int
    attempts: list[tuple[float, float | None]]

    def __str__(self) -> str:
        lines = [f"wrote {self.package.root} ({self.method} pruning, ratio {self.ratio:g})"]
        lines += [f"  {line}" for line in self.layers]
        lines.append(
            f"size: {self.size_before / 1024:.1f} KiB -> {self.size_after / 1024:.1f} KiB; gzip-compressed "
            f"{self.gzip_before / 1024:.1f} KiB -> {self.gzip_after / 1024:.1f} KiB"
        )
        lines.append(
            f"latency, batch {self.batch}: {self.latency_before:.3f} ms -> {self.latency_after:.3f} ms "
            f"({speed(self.latency_before, self.latency_after)})"
        )
        if self.metric:
            lines.append(f"{self.metric}: {self.accuracy_before:.4f} -> {self.accuracy_after:.4f} "
                         f"(drop {100 * (self.accuracy_before - self.accuracy_after):.2f} points)")  # fmt: skip
        if self.method == "magnitude":
            lines.append("note: magnitude pruning leaves the dense file as large and as fast as before; the zeros "
                         "only pay off compressed (above) or on a sparse kernel")  # fmt: skip
        return "\n".join(lines)


def prune(package: Any, out: str | Path, method: str = "structured", ratio: float = 0.25, eval_data: Any = None,
          metric: str = "top1", max_drop: float | None = None, batch: int = 256, overwrite: bool = False,
          calib_data: Any = None) -> PruneResult:  # fmt: skip
    """Prune `package` into `out`. With `calib_data`, the layers after pruned ones are refitted by least
    squares to the original outputs. With `max_drop` (points) and `eval_data`, halve the ratio until the
    accuracy drop fits."""
    import ferry
    from ferry.compress.data import Dataset, load_dataset
    from ferry.compress.evaluate import evaluate
    from ferry.compress.metrics import NEEDS_REFERENCE
    from ferry.compress.report import latency_ms, package_bytes
    from ferry.converters.parity import random_feeds

    package = ferry.load(package) if isinstance(package, (str, Path)) else package
    if method not in ("structured", "magnitude"):
        raise ConfigError(f"pruning method is structured or magnitude, not {method!r}")
    if not 0 < ratio < 1:
        raise ConfigError(f"ratio must be between 0 and 1, got {ratio}")
    if max_drop is not None and eval_data is None:
        raise ConfigError("the accuracy guard (--max-drop) needs evaluation data (--eval)")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: already exists (overwrite=True, or --overwrite)")
    data = None
    if eval_data is not None:
        data = eval_data if isinstance(eval_data, Dataset) else load_dataset(eval_data, package)
    reference = package if metric in NEEDS_REFERENCE else None
    before = evaluate(package, data, metric, reference).value if data is not None else None
    original = package.full_model()
    for node in original.graph.node:
        if not node.name:
            node.name = f"{node.op_type}_{node.output[0]}"
    calib = calib_data if isinstance(calib_data, Dataset) or calib_data is None else load_dataset(calib_data, package)
    attempts: list[tuple[float, float | None]] = []
    # Candidates are judged beside `out`; only the kept one is moved into place (see quantize).
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.candidates-", dir=out.parent))
    try:
        while True:
            model = onnx.ModelProto()
            model.CopyFrom(original)
            consumers: list[str] = []
            kept: dict = {}
            if method == "structured":
                layers = structured(model, ratio, consumers, kept)
                if calib is not None and consumers:
                    refit(model, original, consumers, [feeds for _, feeds in calib.batches(64)][:8], kept)
                    layers.append(f"refitted {len(consumers)} layer(s) on {min(calib.count, 512)} calibration samples")
            else:
                layers = [f"{magnitude(model, ratio)} weight tensors"]
            record = {"pruning": method, "ratio": ratio, "layers": layers, "source": package.name}
            result = derive(package, model, staging / f"try-{len(attempts)}", step="prune", overwrite=True,
                            details={"method": method, "ratio": ratio}, compression=record)  # fmt: skip
            after = evaluate(result, data, metric, reference).value if data is not None else None
            drop = None if after is None else before - after
            attempts.append((ratio, drop))
            if max_drop is None or drop is None or drop * 100 <= max_drop or ratio < 0.01:
                break
            ratio /= 2
        swap_in(result.root, out)
        result = ferry.load(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    feeds = random_feeds(package.signature, batch=batch)
    return PruneResult(
        result, method, ratio, layers, package_bytes(package.root), package_bytes(result.root),
        compressed_bytes(original), compressed_bytes(result.full_model()),
        metric if data is not None else None, before, after,
        latency_ms(package.root, "onnxruntime", feeds), latency_ms(result.root, "onnxruntime", feeds), batch, attempts,
    )  # fmt: skip
