"""`quantize`: int8 (or weight-only int4/int8) packages, with calibration and an accuracy guard.

Which library does what (see docs/compression.md):
- ONNX Runtime's quantization tools: static QDQ / QOperator int8 (min-max, percentile, entropy calibration),
  dynamic int8, weight-only MatMulNBits.
- NNCF: static int8 for OpenVINO (QDQ that OpenVINO turns into its own int8 kernels).
- ferry: the pipeline, MSE calibration (ranges searched here, handed to ONNX Runtime as overrides), folding
  simulated weight quantizers into int8 weights, the per-layer sensitivity table, the guard, the report.
"""

from __future__ import annotations

import functools
import itertools
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ferry.compress.data import Dataset, load_dataset
from ferry.compress.quantizers import nncf_static, ort_dynamic, ort_static, weight_only
from ferry.compress.report import Report, latency_ms, package_bytes
from ferry.compress.sensitivity import LayerError, layer_errors, table
from ferry.errors import ConfigError
from ferry.package.package import derive, swap_in

log = logging.getLogger("ferry.compress")

METHODS = ("minmax", "percentile", "entropy", "mse")
MODES = ("static", "dynamic", "weight-only")


@dataclass
class QuantizeResult:
    package: Any
    report: Report
    backend: str
    format: str
    excluded: list[str] = field(default_factory=list)
    sensitivity: list[LayerError] = field(default_factory=list)
    attempts: list[tuple[int, float | None]] = field(default_factory=list)  # (layers kept float, drop)

    def __str__(self) -> str:
        head = f"wrote {self.package.root} ({self.format} for {self.backend})"
        parts = [head, str(self.report)]
        if self.sensitivity:
            parts += ["per-layer error against fp32 (worst first):", table(self.sensitivity)]
        if self.excluded:
            parts.append(f"kept in float: {', '.join(self.excluded)}")
        return "\n".join(parts)


def calibration_feeds(data: Dataset, size: int, batch: int = 8) -> list[dict[str, np.ndarray]]:
    feeds = []
    for start, chunk in data.batches(batch):
        if start >= size:
            break
        feeds.append(chunk)
    return feeds


def _pick_backend(backend: str, mode: str) -> str:
    if backend != "auto":
        return backend
    if mode == "static":
        import importlib.util

        if importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf"):
            return "openvino"
    return "onnxruntime"


def _ort_latency(model: onnx.ModelProto, feeds: dict) -> float:
    import onnxruntime as ort

    from ferry.bench.measure import time_calls

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return float(np.median(time_calls(lambda: session.run(None, feeds), warmup=3, runs=15, min_seconds=0.0)))


def _quantize(
    package: Any,
    out: str | Path,
    calib: str | Path | Dataset | None = None,
    *,
    mode: str = "static",
    method: str = "minmax",
    fmt: str = "auto",
    backend: str = "auto",
    bits: int = 8,
    per_channel: bool = True,
    calib_size: int = 128,
    eval_data: str | Path | Dataset | None = None,
    metric: str = "top1",
    max_drop: float | None = None,
    exclude: list[str] | None = None,
    overwrite: bool = False,
) -> QuantizeResult:
    """Quantize `package` into a new package at `out` and report size, latency and accuracy before/after.

    With `max_drop` (in accuracy points, e.g. 0.5) and `eval_data`, the guard measures the drop; while it is
    larger, the layers that add the most error are kept in float (1, 2, 4, ... of them) and the model is
    quantized again, until the drop fits or no quantized layer is left."""
    import ferry
    from ferry.compress.evaluate import evaluate

    package = ferry.load(package) if isinstance(package, (str, Path)) else package
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if method not in METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    if mode == "static" and calib is None:
        raise ConfigError("static int8 needs calibration data (--calib): a .npz, .jsonl or image folder")
    if max_drop is not None and eval_data is None:
        raise ConfigError("the accuracy guard (--max-drop) needs evaluation data (--eval)")
    backend = _pick_backend(backend, mode)
    if backend == "tensorrt" and mode != "static":
        raise ConfigError("the TensorRT target takes static int8 (QDQ); use --mode static")
    from ferry.optimize import optimize_model

    # Weights held in Constant nodes would be quantized at run time, and BatchNorm would stay a float op:
    # fold both first (and drop Identity/dead nodes), as quantizers recommend. No com.microsoft fusions:
    # quantizers look for plain ops, and OpenVINO reads none of them.
    original, _ = optimize_model(package.full_model(), skip=("fuse_activation", "fuse_bias_gelu"))
    if _opset(original) < 13:
        # Per-channel Quantize/DequantizeLinear (their `axis`) need opset 13; older exports are upgraded.
        from onnx import version_converter

        original = version_converter.convert_version(original, 13)
    for node in original.graph.node:  # exclusion and the sensitivity table go by node name
        if not node.name:
            node.name = f"{node.op_type}_{node.output[0]}"
    data = None
    feeds: list[dict] = []
    if calib is not None:
        data = load_dataset(calib, package)  # a path, a Dataset, or a Python data reader
        feeds = calibration_feeds(data, calib_size)
    evals = None
    if eval_data is not None:
        evals = eval_data if isinstance(eval_data, Dataset) else load_dataset(eval_data, package)
    one = {n: a[:1] for n, a in (feeds[0] if feeds else _random_one(package)).items()}

    def build(skip: list[str], int8_weights: bool = False) -> tuple[onnx.ModelProto, str]:
        model, form = build_full(skip)
        if int8_weights:
            from ferry.compress.weights import int8_weights_for

            int8_weights_for(model)
        return model, form

    def build_full(skip: list[str]) -> tuple[onnx.ModelProto, str]:
        if mode == "dynamic":
            return ort_dynamic(original, skip), "dynamic-qoperator"
        if mode == "weight-only":
            return weight_only(original, bits, skip), f"weight-only-int{bits}"
        if backend == "openvino":
            return nncf_static(original, feeds, skip), "qdq"
        if backend == "tensorrt":
            return ort_static(original, feeds, method, "qdq", per_channel, skip, symmetric=True), "qdq-symmetric"
        if backend != "onnxruntime":
            raise ConfigError(f"int8 targets onnxruntime, openvino or tensorrt, not {backend!r}")
        if fmt != "auto":
            return ort_static(original, feeds, method, fmt, per_channel, skip), fmt
        # Whichever format runs faster here: QOperator uses ONNX Runtime's int8 kernels directly, QDQ
        # relies on its fusions.
        candidates = {f: ort_static(original, feeds, method, f, per_channel, skip) for f in ("qoperator", "qdq")}
        timings = {f: _ort_latency(m, one) for f, m in candidates.items()}
        chosen = min(timings, key=timings.get)
        log.info("format timings %s: keeping %s", timings, chosen)
        return candidates[chosen], chosen

    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: already exists (overwrite=True, or --overwrite)")
    # Candidates are written beside `out` and judged there; only the one the guard keeps is moved into place,
    # so an interrupted run never leaves a package the guard rejected (or half of one) at `out`.
    tries = itertools.count()
    from ferry.compress.metrics import NEEDS_REFERENCE

    reference = package if metric in NEEDS_REFERENCE else None  # agreement / cosine: with the fp32 model
    baseline = evaluate(package, evals, metric, reference) if evals is not None else None
    skipped: list[str] = list(exclude or [])
    attempts: list[tuple[int, float | None]] = []
    sensitivity: list[LayerError] = []
    # TensorRT needs a GPU: the QDQ graph is checked and timed on ONNX Runtime's CPU session here, and runs
    # on TensorRT through ONNX Runtime's TensorRT provider (Config.enable_tensorrt) where one is present.
    engine = "onnxruntime" if backend == "tensorrt" else backend
    tuning = {"fp32": {"fastest": {"1": engine, "64": engine}, "source": "ferry quantize"}}

    def attempt(skip: list[str], int8_weights: bool = False):
        model, form = build(skip, int8_weights)
        record = {"mode": mode, "method": method if mode == "static" else None, "format": form,
                  "backend": backend, "runs_on": engine, "bits": bits, "kept_float": skip,
                  "int8_weights_when_float": int8_weights, "source": package.name}  # fmt: skip
        saved = derive(package, model, staging / f"try-{next(tries)}", step="quantize", overwrite=True,
                       details={"mode": mode, "format": form, "backend": backend}, compression=record,
                       tuning=tuning)  # fmt: skip
        score = evaluate(saved, evals, metric, reference, backend=engine) if evals is not None else None
        return saved, form, score, None if score is None else baseline.value - score.value

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.candidates-", dir=out.parent))
    try:
        while True:
            result_pkg, form, score, drop = attempt(skipped)
            attempts.append((len(skipped), drop))
            if max_drop is None or drop is None or drop * 100 <= max_drop:
                if mode == "static" and drop is not None:
                    # Layers left out of int8 (by the guard, or by the quantizer's own rules) may still store
                    # int8 weights, their activations staying float: a smaller file, usually the same accuracy.
                    # Kept only if the measured drop still fits.
                    trial = attempt(skipped, int8_weights=True)
                    if max_drop is None or trial[3] * 100 <= max_drop:
                        result_pkg, form, score, drop = trial
                    else:
                        result_pkg, form, score, drop = attempt(skipped)
                break
            if not sensitivity:
                qdq = original if mode != "static" else ort_static(original, feeds, method, "qdq", per_channel, [])
                sensitivity = layer_errors(original, qdq, feeds[:4])
                log.warning(
                    "accuracy drop %.3g points > %g allowed; per-layer error, worst first:\n%s",
                    drop * 100,
                    max_drop,
                    table(sensitivity),
                )
            candidates = [r.node for r in sensitivity if r.node not in skipped]  # measured worst first
            if not candidates:
                log.warning("every quantizable layer is in float and the drop is still %.3g points", drop * 100)
                break
            skipped += candidates[: max(1, len(skipped) - len(exclude or []))]
        report = Report(
            package.name, package_bytes(package.root), package_bytes(result_pkg.root), backend,
            latency_ms(package.root, "onnxruntime", one), latency_ms(result_pkg.root, engine, one),
            metric if evals is not None else None,
            baseline.value if baseline else None, score.value if score else None,
        )  # fmt: skip
        matmuls = sum(n.op_type == "MatMul" for n in original.graph.node)
        report.check(form, f"the weights of MatMul layers ({matmuls} in this model)")
        if max_drop is not None and report.drop is not None and report.drop * 100 > max_drop:
            report.notes.append(f"the guard could not bring the drop within {max_drop} points")
        result_pkg.manifest.compression["report"] = {
            "size_before": report.size_before,
            "size_after": report.size_after,
            "latency_before_ms": report.latency_before,
            "latency_after_ms": report.latency_after,
            "metric": report.metric,
            "accuracy_before": report.accuracy_before,
            "accuracy_after": report.accuracy_after,
        }
        result_pkg.write_manifest()
        swap_in(result_pkg.root, out)
        result_pkg = ferry.load(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return QuantizeResult(result_pkg, report, backend, form, skipped, sensitivity, attempts)


class _Once(logging.Filter):
    """Lets the first record that starts with `prefix` through and drops the rest: ONNX Runtime's quantizer
    logs its pre-processing advice on the root logger at every call, 8 times in one guarded run."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix, self.seen = prefix, False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        passed, self.seen = not self.seen, True
        return passed


@functools.wraps(_quantize)
def quantize(*args: Any, **kwargs: Any) -> QuantizeResult:
    once = _Once("Please consider")  # both of ONNX Runtime's spellings of the advice
    root = logging.getLogger()
    root.addFilter(once)
    try:
        return _quantize(*args, **kwargs)
    finally:
        root.removeFilter(once)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _random_one(package) -> dict[str, np.ndarray]:
    from ferry.converters.parity import random_feeds

    return random_feeds(package.signature, batch=1)
