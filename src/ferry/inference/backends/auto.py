"""Backend "auto": the fastest engine per batch size as `ferry bench --tune` recorded it, else ONNX Runtime.

When the record names different engines for different batch sizes, both are loaded and each run goes to
the one measured fastest at the nearest recorded batch size.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ferry.inference.backends.base import OpTime, Session

if TYPE_CHECKING:
    from ferry.inference.config import Config

DEFAULT = "onnxruntime"


def choose(config: Config) -> tuple[dict[int, str], str]:
    """({batch size: engine}, reason). An empty map means: use DEFAULT for every batch."""
    from ferry.inference.backends import installed_backends

    record = config.package.manifest.tuning.get(config.precision, {})
    table = {int(b): name for b, name in record.get("fastest", {}).items()}
    if not table:
        return {}, f"no tuning record for {config.precision}; using {DEFAULT} (run `ferry bench --tune`)"
    missing = sorted(set(table.values()) - set(installed_backends()))
    if missing:
        return {}, f"tuning record names {missing}, not installed here; using {DEFAULT}"
    summary = ", ".join(f"batch {b}: {n}" for b, n in sorted(table.items()))
    return table, f"tuning record ({summary})"


def nearest(table: dict[int, Any], batch: int) -> Any:
    return table[min(table, key=lambda b: (abs(math.log(max(batch, 1)) - math.log(b)), b))]


class AutoSession:
    """Routes each run to the engine recorded fastest for its batch size."""

    backend = "auto"

    def __init__(self, by_batch: dict[int, Session], first_input: str, reason: str):
        self._by_batch = by_batch
        self._first = first_input
        self._reason = reason

    def _pick(self, feeds: dict[str, Any]) -> Session:
        value = feeds[self._first]
        shape = value.shape() if callable(getattr(value, "shape", None)) else np.shape(value)
        return nearest(self._by_batch, shape[0] if len(shape) else 1)

    def run(self, feeds: dict[str, Any], output_names: list[str]) -> list[np.ndarray]:
        return self._pick(feeds).run(feeds, output_names)

    def share(self, array: np.ndarray) -> Any:
        return array  # the engine is chosen at run time, so no engine-specific wrapper here

    def clone(self) -> AutoSession:
        clones: dict[int, Session] = {}
        made: dict[int, Session] = {}
        for b, s in self._by_batch.items():
            clones[b] = made.setdefault(id(s), s.clone())
        return AutoSession(clones, self._first, self._reason)

    def profile(self) -> list[OpTime]:
        rows: list[OpTime] = []
        for s in {id(s): s for s in self._by_batch.values()}.values():
            rows += s.profile()
        return rows

    def describe(self) -> str:
        engines = {id(s): s.describe() for s in self._by_batch.values()}
        return f"auto -> {' + '.join(engines.values())} from {self._reason}"
