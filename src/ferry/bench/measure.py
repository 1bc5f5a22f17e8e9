"""Timing one configuration: warm up, then time runs until both a count and a time budget are met."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ferry.converters.parity import random_feeds
from ferry.inference import Predictor, create_predictor, make_config
from ferry.package import ModelPackage

# measure_each times the configurations in turn, round after round, and keeps the median of the rounds'
# medians: this machine drifts 30-40% over minutes, and timed one after another the drift, not the
# engines, decided what `auto` chose (ResNet-18 batch 8: MNN in one tuning, ncnn in the next). PAUSE_S
# lets the previous engine's worker threads stop spinning first (ORT's and OpenMP's spin-waits).
ROUNDS = 3
PAUSE_S = 0.1


@dataclass(frozen=True)
class Measurement:
    backend: str
    batch: int
    threads: int | None
    runs: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float = 0.0
    max_ms: float = 0.0

    @property
    def items_per_s(self) -> float:
        return self.batch * 1000.0 / self.p50_ms if self.p50_ms else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "items_per_s": self.items_per_s}


def time_calls(fn: Callable[[], Any], warmup: int, runs: int, min_seconds: float) -> np.ndarray:
    """Per-call milliseconds: at least `runs` calls and at least `min_seconds` of them."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
        if len(times) >= 100 * max(runs, 1):
            break
    return np.asarray(times)


def summarize(backend: str, batch: int, threads: int | None, times_ms: np.ndarray) -> Measurement:
    return Measurement(
        backend=backend,
        batch=batch,
        threads=threads,
        runs=len(times_ms),
        mean_ms=float(times_ms.mean()),
        p50_ms=float(np.percentile(times_ms, 50)),
        p90_ms=float(np.percentile(times_ms, 90)),
        p99_ms=float(np.percentile(times_ms, 99)),
        min_ms=float(times_ms.min()),
        max_ms=float(times_ms.max()),
    )


def measure_predictor(
    predictor: Predictor,
    batch: int,
    warmup: int = 5,
    runs: int = 30,
    min_seconds: float = 0.0,
    dims: dict[str, int] | None = None,
) -> Measurement:
    """Time `predictor` on made-up inputs; `dims` sizes the named dimensions (an image's height and width,
    a sequence length) that would otherwise be 8."""
    feeds = random_feeds(predictor.config.package.signature, batch=batch, dims=dims)
    times = time_calls(lambda: predictor.predict(feeds), warmup, runs, min_seconds)
    return summarize(predictor.config.backend, batch, predictor.config.cpu_threads, times)


def measure(
    package: ModelPackage,
    backend: str,
    batch: int,
    threads: int | None = None,
    precision: str = "fp32",
    warmup: int = 5,
    runs: int = 30,
    min_seconds: float = 0.0,
    dims: dict[str, int] | None = None,
) -> Measurement:
    config = make_config(package, backend, threads, precision)
    return measure_predictor(create_predictor(config), batch, warmup, runs, min_seconds, dims)


def measure_each(
    package: ModelPackage,
    backends: list[str],
    batches: list[int],
    threads: list[int | None],
    precision: str = "fp32",
    warmup: int = 5,
    runs: int = 30,
    min_seconds: float = 0.0,
    dims: dict[str, int] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> tuple[list[Measurement], dict[str, str]]:
    """Every backend x thread count x batch size, timed in turn over ROUNDS rounds (`runs` and
    `min_seconds` split between them); each keeps the median of its rounds' medians. A backend that cannot
    take the model (ncnn has no layer for an op, MNN's converter refuses it) is left out with its reason:
    ({...}, {backend: reason})."""
    from ferry.errors import BackendError, UnsupportedModelError

    skipped: dict[str, str] = {}
    predictors: dict[tuple[str, int | None], Predictor] = {}
    feeds = {b: random_feeds(package.signature, batch=b, dims=dims) for b in batches}
    for backend in backends:
        try:
            for n in threads:
                predictor = create_predictor(make_config(package, backend, n, precision))
                for b in batches:  # the first call converts (ncnn: at its shapes) and may fail
                    predictor.predict(feeds[b])
                predictors[(backend, n)] = predictor
        except (UnsupportedModelError, BackendError) as exc:
            skipped[backend] = str(exc)
            predictors = {k: v for k, v in predictors.items() if k[0] != backend}
    times: dict[tuple[str, int | None, int], list[np.ndarray]] = {}
    for round_ in range(ROUNDS):
        for (backend, n), predictor in predictors.items():
            for b in batches:
                if on_step:
                    on_step(f"measuring {backend}, batch {b}, {n} threads (round {round_ + 1} of {ROUNDS})")
                time.sleep(PAUSE_S)
                calls = time_calls(lambda: predictor.predict(feeds[b]), warmup if round_ == 0 else 1,  # noqa: B023
                                   max(1, -(-runs // ROUNDS)), min_seconds / ROUNDS)  # fmt: skip
                times.setdefault((backend, n, b), []).append(calls)
    results = []
    for (backend, n, b), rounds in times.items():
        m = summarize(backend, b, n, np.concatenate(rounds))
        results.append(replace(m, p50_ms=float(np.median([np.median(r) for r in rounds]))))
    return results, skipped
