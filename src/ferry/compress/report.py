"""Before/after numbers for every compression run: file size, latency on the target backend, accuracy."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ferry.bench.measure import time_calls


def package_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in Path(root).iterdir() if f.name.startswith("model.onnx"))


def latency_ms(package_root: Path, backend: str, feeds: dict[str, np.ndarray], threads: int = 2,
               seconds: float = 2.0) -> float:  # fmt: skip
    """Median latency of one call with `feeds`, after warm-up, on a fresh predictor."""
    import ferry

    config = ferry.Config(package_root)
    config.set_backend(backend)
    config.set_cpu_threads(threads)
    predictor = ferry.create_predictor(config)
    return float(np.median(time_calls(lambda: predictor.predict(feeds), warmup=3, runs=5, min_seconds=seconds)))


def vnni() -> bool:
    """Whether this CPU has the int8 dot-product instructions that make int8 kernels fast."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


@dataclass
class Report:
    model: str
    size_before: int
    size_after: int
    backend: str
    latency_before: float  # fp32 on ONNX Runtime: the reference a user starts from
    latency_after: float  # the compressed package on `backend`
    metric: str | None = None
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def drop(self) -> float | None:
        if self.accuracy_before is None or self.accuracy_after is None:
            return None
        return self.accuracy_before - self.accuracy_after

    def __str__(self) -> str:
        mib = 1 / 2**20
        lines = [
            f"size: {self.size_before * mib:.2f} MiB -> {self.size_after * mib:.2f} MiB "
            f"({self.size_after / self.size_before:.2f}x)",
            f"latency, batch 1: {self.latency_before:.2f} ms (fp32, onnxruntime) -> {self.latency_after:.2f} ms "
            f"({self.backend}), {speed(self.latency_before, self.latency_after)}",
        ]
        if self.drop is not None:
            lines.append(
                f"{self.metric}: {self.accuracy_before:.4f} -> {self.accuracy_after:.4f} "
                f"(drop {100 * self.drop:.2f} points)"
            )
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def check(self, form: str = "", covered: str | None = None) -> None:
        """Explain what users ask about most: a file that did not shrink, a model that is not faster.

        `form` is the quantized format ("qdq", "weight-only-int4", ...); `covered` says, for weight-only
        modes, which layers the quantizer packs and how many the model has."""
        label = form.replace("weight-only-", "weight-only ") if form.startswith("weight-only") else "int8"
        if self.size_after > 0.5 * self.size_before:
            if form.startswith("weight-only"):
                self.notes.append(
                    f"the file did not shrink much: {label} packs {covered or 'MatMul weights only'}; "
                    "Conv and other layers keep float weights (static int8 with --calib covers them)"
                )
            else:
                self.notes.append(
                    "the file did not shrink much: weights stay float where layers were kept in float, and "
                    "small models are dominated by what is not a weight"
                )
        if self.latency_after >= self.latency_before * 0.95:
            why = [] if vnni() else ["this CPU lacks VNNI/AMX int8 instructions"]
            if self.backend == "onnxruntime" and form == "qdq":
                why.append("ONNX Runtime runs QDQ graphs through dequantized float kernels unless they fuse")
            if form.startswith("weight-only"):
                why.append("weight-only packing saves memory and bandwidth; its kernels unpack weights on each run")
            else:
                why.append("small layers spend their time quantizing and dequantizing, not multiplying")
            self.notes.append(f"{label} is not faster on {self.backend} here: " + "; ".join(why))


def speed(before: float, after: float) -> str:
    """'1.80x faster' or '1.25x slower': never '0.80x faster'."""
    if after <= 0 or before <= 0:
        return "speed not measured"
    return f"{before / after:.2f}x faster" if after <= before else f"{after / before:.2f}x slower"
