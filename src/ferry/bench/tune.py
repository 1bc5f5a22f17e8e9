"""Turn measurements into the record `auto` reads: the fastest engine per batch size."""

from __future__ import annotations

from typing import Any

from ferry.bench.host import host_info
from ferry.bench.measure import Measurement


def fastest_per_batch(measurements: list[Measurement]) -> dict[int, Measurement]:
    """The setting with the lowest median per batch size: what `auto` will run."""
    best: dict[int, Measurement] = {}
    for m in measurements:
        if m.batch not in best or m.p50_ms < best[m.batch].p50_ms:
            best[m.batch] = m
    return dict(sorted(best.items()))


def tuning_record(
    measurements: list[Measurement], precision: str, host: dict[str, Any] | None = None
) -> dict[str, Any]:
    host = host or host_info()
    return {
        "fastest": {str(batch): m.backend for batch, m in fastest_per_batch(measurements).items()},
        "measured": [m.to_dict() for m in measurements],
        "host": host,
        "precision": precision,
        "when": host["when"],
    }
