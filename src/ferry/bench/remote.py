"""`ferry bench --url`: drive a running server with ferry's client from N threads, for a bounded time."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from ferry.errors import FerryError
from ferry.protocol.datatypes import TO_NUMPY


@dataclass(frozen=True)
class RemoteResult:
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def example_inputs(metadata: dict, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs shaped by the server's model metadata (-1 dims become `batch`, then 8)."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for t in metadata["inputs"]:
        shape = [int(d) if int(d) >= 0 else (batch if i == 0 else 8) for i, d in enumerate(t["shape"])]
        dtype = TO_NUMPY[t["datatype"]]
        if dtype.kind == "f":
            inputs[t["name"]] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "O":
            inputs[t["name"]] = np.full(shape, b"x", dtype=object)
        else:
            inputs[t["name"]] = rng.integers(0, 2, shape).astype(dtype)
    return inputs


def drive(url: str, model: str, concurrency: int, seconds: float, batch: int = 1, api_key: str | None = None):
    from ferry.client import Client

    client = Client(url, api_key=api_key)
    inputs = example_inputs(client.metadata(model), batch)
    client.infer(model, inputs)  # warm up, and fail early on a bad setup
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    stop_at = time.perf_counter() + seconds

    def worker(i: int) -> None:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                client.infer(model, inputs)
            except FerryError:
                errors[i] += 1
                continue
            latencies[i].append((time.perf_counter() - t0) * 1000.0)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    client.close()
    all_ms = np.asarray([x for lst in latencies for x in lst]) if any(latencies) else np.zeros(1)
    return RemoteResult(
        requests=sum(len(lst) for lst in latencies),
        errors=sum(errors),
        seconds=elapsed,
        p50_ms=float(np.percentile(all_ms, 50)),
        p90_ms=float(np.percentile(all_ms, 90)),
        p99_ms=float(np.percentile(all_ms, 99)),
    )
