"""`evaluate`: run a package over a dataset and score it with one metric."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferry.compress import metrics
from ferry.compress.data import Dataset, load_dataset
from ferry.errors import ConfigError, InputError


@dataclass
class EvalResult:
    model: str
    metric: str
    value: float
    count: int
    seconds: float
    backend: str

    def __str__(self) -> str:
        where = f"{self.backend}, {self.seconds:.1f} s"
        return f"{self.model}: {self.metric} {self.value:.4f} over {self.count} samples ({where})"


def run_outputs(package, data: Dataset, backend: str = "onnxruntime", batch: int = 32, progress: bool = False,
                threads: int | None = None) -> tuple[np.ndarray, str]:  # fmt: skip
    """The package's first output over the whole dataset, in batches."""
    import ferry

    config = ferry.Config(package.root or package.model_path)
    config.set_backend(backend)
    if threads:
        config.set_cpu_threads(threads)
    predictor = ferry.create_predictor(config)
    first = package.signature.outputs[0].name
    parts = []
    steps = list(data.batches(batch))
    if progress:
        from rich.progress import track

        steps = track(steps, description=f"evaluating {package.name}", transient=True)
    for _, feeds in steps:
        parts.append(predictor.predict(feeds, outputs=[first])[first])
    return np.concatenate(parts), predictor.backend


def evaluate(
    package: Any,
    data: str | Path | Dataset,
    metric: str = "top1",
    reference: Any = None,
    backend: str = "onnxruntime",
    batch: int = 32,
    limit: int | None = None,
    progress: bool = False,
) -> EvalResult:
    """Score `package` on `data` with `metric` (see ferry.compress.metrics.METRICS). `reference` is a
    package (or path) for the metrics that compare against another model."""
    import ferry

    package = ferry.load(package) if isinstance(package, (str, Path)) else package
    if metric not in metrics.METRICS:
        raise ConfigError(f"unknown metric {metric!r}; choose one of {', '.join(metrics.METRICS)}")
    dataset = data if isinstance(data, Dataset) else load_dataset(data, package, limit)
    if metric in metrics.NEEDS_LABELS and dataset.labels is None:
        raise InputError(f"metric {metric!r} needs labels, and the data has none")
    if metric in metrics.NEEDS_REFERENCE and reference is None:
        raise ConfigError(f"metric {metric!r} compares against a reference model: pass reference=PKG (--reference)")
    started = time.perf_counter()
    scores, engine = run_outputs(package, dataset, backend, batch, progress)
    ref_scores = None
    if metric in metrics.NEEDS_REFERENCE:
        reference = ferry.load(reference) if isinstance(reference, (str, Path)) else reference
        ref_scores, _ = run_outputs(reference, dataset, "onnxruntime", batch, progress)
    value = metrics.score(metric, scores, dataset.labels, ref_scores, package.manifest.labels)
    return EvalResult(package.name, metric, value, dataset.count, time.perf_counter() - started, engine)
