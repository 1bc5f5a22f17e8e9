"""`convert_precision`: fp16 weights and compute (sensitive ops kept fp32), or bf16 through OpenVINO.

fp16 rewrites the graph with ONNX Runtime's float16 converter, keeping inputs and outputs float32 and a
block list of ops whose range or accumulation fp16 would hurt (softmax, normalisations, exp/log, reductions).
The file halves. CPUs without fp16 arithmetic run it through casts, so it is a size win there, not a speed
win; the report says so when it measures it.

bf16 keeps the fp32 graph: OpenVINO computes in bf16 on CPUs with AVX512_BF16/AMX, which this package then
asks for by default (`Config` reads `run_precision`, `auto` picks OpenVINO). Its parity against fp32 is
measured and reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferry.compress.report import latency_ms, package_bytes, speed
from ferry.errors import ConfigError
from ferry.package import derive

KEEP_FP32 = ["Softmax", "LogSoftmax", "LayerNormalization", "BatchNormalization", "InstanceNormalization",
             "GroupNormalization", "ReduceMean", "ReduceSum", "ReduceL2", "Exp", "Log", "Pow", "Sqrt", "Erf",
             "Resize", "Range", "CumSum", "TopK", "NonMaxSuppression"]  # fmt: skip


@dataclass
class PrecisionResult:
    package: Any
    precision: str
    size_before: int
    size_after: int
    max_abs_diff: float
    metric: str | None
    accuracy_before: float | None
    accuracy_after: float | None
    latency_before: float
    latency_after: float
    backend: str

    def __str__(self) -> str:
        lines = [
            f"wrote {self.package.root} ({self.precision}, runs on {self.backend})",
            f"size: {self.size_before / 2**20:.2f} MiB -> {self.size_after / 2**20:.2f} MiB "
            f"({self.size_after / self.size_before:.2f}x)",
            f"parity against fp32 on the evaluation inputs: max abs diff {self.max_abs_diff:.3g}",
            f"latency, batch 1: {self.latency_before:.2f} ms (fp32, onnxruntime) -> {self.latency_after:.2f} ms "
            f"({self.precision}, {self.backend}), {speed(self.latency_before, self.latency_after)}",
        ]
        if self.metric:
            lines.append(f"{self.metric}: {self.accuracy_before:.4f} -> {self.accuracy_after:.4f}")
        if self.latency_after > self.latency_before:
            lines.append(
                f"note: {self.precision} is not faster here: on a small model the per-call overhead dominates, and "
                "a CPU without fp16 arithmetic runs fp16 through conversions"
            )
        return "\n".join(lines)


def convert_precision(package: Any, out: str | Path, to: str = "fp16", eval_data: Any = None, metric: str = "cosine",
                      overwrite: bool = False) -> PrecisionResult:  # fmt: skip
    import ferry
    from ferry.compress.data import Dataset, load_dataset
    from ferry.compress.evaluate import evaluate, run_outputs
    from ferry.compress.metrics import NEEDS_REFERENCE
    from ferry.converters.parity import random_feeds

    package = ferry.load(package) if isinstance(package, (str, Path)) else package
    if to not in ("fp16", "bf16"):
        raise ConfigError(f"convert-precision goes to fp16 or bf16, not {to!r}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: already exists (overwrite=True, or --overwrite)")
    step = {"step": "convert-precision", "details": {"to": to}, "overwrite": True}
    model = package.full_model()
    if to == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=KEEP_FP32)
        result = derive(package, converted, out, compression={"precision": "fp16", "kept_fp32_ops": KEEP_FP32}, **step)
        backend = "onnxruntime"
    else:
        backend = "openvino"
        tuning = {"bf16": {"fastest": {"1": "openvino", "64": "openvino"}, "source": "ferry convert-precision"}}
        record = {"precision": "bf16", "run_precision": "bf16", "backend": "openvino"}
        result = derive(package, model, out, compression=record, tuning=tuning, **step)
    data = None
    if eval_data is not None:
        data = eval_data if isinstance(eval_data, Dataset) else load_dataset(eval_data, package)
    else:
        feeds = random_feeds(package.signature, batch=8)
        data = Dataset(feeds, None, 8)
    want, _ = run_outputs(package, data)
    got, _ = run_outputs(result, data, backend=backend)
    diff = float(np.max(np.abs(want.astype(np.float64) - got.astype(np.float64))))
    before = after = None
    if eval_data is not None:
        reference = package if metric in NEEDS_REFERENCE else None
        before = evaluate(package, data, metric, reference).value
        after = evaluate(result, data, metric, reference, backend=backend).value
    one = {n: a[:1] for n, a in data.inputs.items()}
    return PrecisionResult(
        result, to, package_bytes(package.root), package_bytes(result.root), diff,
        metric if eval_data is not None else None, before, after,
        latency_ms(package.root, "onnxruntime", one), latency_ms(result.root, backend, one), backend,
    )  # fmt: skip
