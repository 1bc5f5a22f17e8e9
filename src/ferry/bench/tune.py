"""Turn measurements into the record `auto` reads: the fastest engine per batch size."""

from __future__ import annotations

from typing import Any

from ferry.bench.host import host_info
from ferry.bench.measure import Measurement
from ferry.package import ModelPackage

# Engines that convert at fixed input shapes: for a model whose inputs have named dimensions past the batch
# (a page's height and width, a crop's width), a new size means a new conversion (seconds), so `auto` does
# not choose them there even when they measured fastest at the tuned size.
FIXED_SHAPES = {"ncnn"}


def fastest_per_batch(measurements: list[Measurement], package: ModelPackage | None = None) -> dict[int, Measurement]:
    """The setting with the lowest median per batch size: what `auto` will run."""
    named = package is not None and bool(package.signature.named_inner_dims)
    best: dict[int, Measurement] = {}
    for m in measurements:
        if named and m.backend in FIXED_SHAPES:
            continue
        if m.batch not in best or m.p50_ms < best[m.batch].p50_ms:
            best[m.batch] = m
    return dict(sorted(best.items()))


def tuning_record(
    measurements: list[Measurement],
    precision: str,
    host: dict[str, Any] | None = None,
    package: ModelPackage | None = None,
) -> dict[str, Any]:
    """What `auto` reads; with `package`, engines that convert at fixed shapes are not chosen for a model
    with named dimensions (see FIXED_SHAPES)."""
    host = host or host_info()
    return {
        "fastest": {str(batch): m.backend for batch, m in fastest_per_batch(measurements, package).items()},
        "measured": [m.to_dict() for m in measurements],
        "host": host,
        "precision": precision,
        "when": host["when"],
    }
