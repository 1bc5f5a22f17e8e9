"""Turn measurements into the record `auto` reads: the fastest engine per batch size."""

from __future__ import annotations

import datetime as dt
import os
import platform
from typing import Any

from ferry.bench.measure import Measurement


def tuning_record(measurements: list[Measurement], precision: str) -> dict[str, Any]:
    fastest: dict[str, str] = {}
    best: dict[int, Measurement] = {}
    for m in measurements:
        if m.batch not in best or m.p50_ms < best[m.batch].p50_ms:
            best[m.batch] = m
    for batch, m in sorted(best.items()):
        fastest[str(batch)] = m.backend
    return {
        "fastest": fastest,
        "measured": [m.to_dict() for m in measurements],
        "host": {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "precision": precision,
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
