"""Per model version statistics in Triton's shape (`GET /v2/models/stats`, gRPC `ModelStatistics`), so that
tritonclient's `get_inference_statistics`, perf_analyzer and model-analyzer read them unchanged.

They are fed by the same events as the Prometheus metrics (`Metrics.on_request`, `on_batch`, `on_cache`):
one request's outcome and total time, one batch's rows, compute time and the queue waits of its
requests, one cache lookup. Durations are nanoseconds, as Triton's; `compute_input` and
`compute_output` are counted with zero time, since ferry's engines take and return numpy arrays in the
one call that `compute_infer` measures. Warm-up runs are not counted (Triton does not count them either).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

PHASES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)

    def to_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class VersionStats:
    name: str
    version: str
    last_inference: int = 0  # milliseconds since the epoch
    inference_count: int = 0  # rows answered (Triton counts each batch element)
    execution_count: int = 0  # engine runs
    phases: dict[str, _Duration] = field(default_factory=lambda: {p: _Duration() for p in PHASES})
    batches: dict[int, _Duration] = field(default_factory=dict)  # batch size -> compute_infer

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {p: d.to_dict() for p, d in self.phases.items()},
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": {"count": d.count, "ns": 0},
                    "compute_infer": d.to_dict(),
                    "compute_output": {"count": d.count, "ns": 0},
                }
                for size, d in sorted(self.batches.items())
            ],
        }


class Statistics:
    """Thread-safe: batches are reported from worker threads, requests from the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, str], VersionStats] = {}

    def _get(self, model: str, version: str) -> VersionStats:
        key = (model, version)
        found = self._versions.get(key)
        if found is None:
            found = self._versions[key] = VersionStats(model, version)
        return found

    def on_request(self, model: str, version: str, ok: bool, seconds: float) -> None:
        with self._lock:
            s = self._get(model, version)
            s.phases["success" if ok else "fail"].add(seconds)
            if ok:
                s.last_inference = int(time.time() * 1000)

    def on_batch(self, model: str, version: str, rows: int, seconds: float, waits: list[float]) -> None:
        with self._lock:
            s = self._get(model, version)
            s.execution_count += 1
            s.inference_count += rows
            s.phases["compute_infer"].add(seconds * len(waits), len(waits))
            s.phases["compute_input"].add(0.0, len(waits))
            s.phases["compute_output"].add(0.0, len(waits))
            s.phases["queue"].add(sum(waits), len(waits))
            s.batches.setdefault(rows, _Duration()).add(seconds)

    def on_cache(self, model: str, version: str, hit: bool, seconds: float) -> None:
        with self._lock:
            s = self._get(model, version)
            s.phases["cache_hit" if hit else "cache_miss"].add(seconds)
            if hit:
                s.inference_count += 1
                s.last_inference = int(time.time() * 1000)

    def report(self, versions: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Triton's `model_stats` list for these (model, version) pairs, zeros for those not yet called."""
        with self._lock:
            return [(self._versions.get(key) or VersionStats(*key)).to_dict() for key in versions]
