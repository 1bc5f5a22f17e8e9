"""The numeric check every converter runs: source outputs against the package's, on the same inputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ferry.errors import ParityError
from ferry.package.manifest import Signature


@dataclass(frozen=True)
class OutputDiff:
    name: str
    max_abs: float
    max_rel: float

    def line(self) -> str:
        return f"{self.name}: max abs diff {self.max_abs:.3g}, max rel diff {self.max_rel:.3g}"


@dataclass(frozen=True)
class ParityReport:
    model: str
    diffs: tuple[OutputDiff, ...]
    atol: float
    rtol: float

    @property
    def max_abs(self) -> float:
        return max((d.max_abs for d in self.diffs), default=0.0)

    def __str__(self) -> str:
        return f"parity check of {self.model!r} (atol {self.atol:g}, rtol {self.rtol:g}): " + "; ".join(
            d.line() for d in self.diffs
        )


def compare(
    model: str,
    names: Sequence[str],
    expected: Sequence[np.ndarray],
    actual: Sequence[np.ndarray],
    atol: float,
    rtol: float,
) -> ParityReport:
    """Raise ParityError if any output differs beyond `atol + rtol * |expected|`; else return the report."""
    if len(expected) != len(actual):
        raise ParityError(f"model {model!r}: the source gave {len(expected)} outputs, the package {len(actual)}")
    diffs, failures = [], []
    for name, want, got in zip(names, expected, actual):
        want, got = np.asarray(want), np.asarray(got)
        if want.shape != got.shape:
            raise ParityError(
                f"model {model!r}, output {name!r}: source shape {list(want.shape)}, package {list(got.shape)}"
            )
        if want.dtype.kind in "OUSb" or got.dtype.kind in "OUSb":
            same = bool(np.array_equal(want, got))
            diffs.append(OutputDiff(name, 0.0 if same else 1.0, 0.0 if same else 1.0))
            if not same:
                failures.append(f"{name}: values differ")
            continue
        w, g = want.astype(np.float64), got.astype(np.float64)
        err = np.abs(w - g)
        max_abs = float(err.max()) if err.size else 0.0
        max_rel = float((err / np.maximum(np.abs(w), 1e-12)).max()) if err.size else 0.0
        diffs.append(OutputDiff(name, max_abs, max_rel))
        if err.size and bool((err > atol + rtol * np.abs(w)).any()):
            failures.append(f"{name}: max abs diff {max_abs:.3g} > atol {atol:g} + rtol {rtol:g} * |source|")
    report = ParityReport(model, tuple(diffs), atol, rtol)
    if failures:
        raise ParityError(
            f"model {model!r}: converted outputs differ from the source: {'; '.join(failures)} "
            "(raise the tolerance with --atol/--rtol if this is expected)"
        )
    return report


def random_feeds(signature: Signature, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs shaped by the signature: named dims become `batch` on axis 0 and 8 elsewhere."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in signature.inputs:
        shape = [d if isinstance(d, int) else (batch if axis == 0 else 8) for axis, d in enumerate(spec.shape)]
        if spec.dtype.startswith("float"):
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype == "bool":
            feeds[spec.name] = rng.integers(0, 2, shape).astype(bool)
        elif spec.dtype == "string":
            feeds[spec.name] = np.array(rng.choice(["a", "b"], size=shape), dtype=object)
        else:
            feeds[spec.name] = rng.integers(0, 2, shape).astype(spec.dtype)
    return feeds
