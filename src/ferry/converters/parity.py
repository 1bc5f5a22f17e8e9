"""The numeric check every converter runs: source outputs against the package's, on the same inputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ferry.errors import ParityError
from ferry.package.manifest import Signature


@dataclass(frozen=True)
class OutputDiff:
    """How one output compares. Labels, integers, strings and booleans must be equal, and the report says
    how many are; numbers get the largest absolute difference, and the largest relative one over the
    elements whose magnitude is above the absolute tolerance (near zero a relative difference says
    nothing: 1e-9 against 0 is "100%")."""

    name: str
    max_abs: float = 0.0
    max_rel: float = 0.0
    equal: int | None = None  # for exact outputs: how many elements are equal
    total: int = 0

    def line(self) -> str:
        if self.equal is not None:
            return f"{self.name}: {self.equal}/{self.total} equal"
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
        if want.dtype.kind in "OUSbiu" or got.dtype.kind in "OUSbiu":
            equal = int(np.sum(want == got)) if want.size else 0
            diffs.append(OutputDiff(name, equal=equal, total=int(want.size)))
            if equal != want.size:
                failures.append(f"{name}: {want.size - equal} of {want.size} values differ")
            continue
        w, g = want.astype(np.float64), got.astype(np.float64)
        # NaN where the source has a number is a difference (an engine's NaN passed every bound before);
        # NaN against NaN, and equal infinities, are not.
        with np.errstate(invalid="ignore"):
            err = np.where((w == g) | (np.isnan(w) & np.isnan(g)), 0.0, np.abs(w - g))
        err = np.where(np.isnan(err), np.inf, err)
        max_abs = float(err.max()) if err.size else 0.0
        meaningful = np.abs(w) > atol
        meaningful &= np.isfinite(w)
        max_rel = float((err[meaningful] / np.abs(w[meaningful])).max()) if meaningful.any() else 0.0
        diffs.append(OutputDiff(name, max_abs, max_rel))
        scale = np.where(np.isfinite(w), np.abs(w), 0.0)  # an infinite source value bounds nothing
        if err.size and bool((err > atol + rtol * scale).any()):
            failures.append(f"{name}: max abs diff {max_abs:.3g} > atol {atol:g} + rtol {rtol:g} * |source|")
    report = ParityReport(model, tuple(diffs), atol, rtol)
    if failures:
        raise ParityError(
            f"model {model!r}: converted outputs differ from the source: {'; '.join(failures)} "
            "(raise the tolerance with --atol/--rtol if this is expected)",
            failures,
            report,
        )
    return report


def random_feeds(
    signature: Signature, batch: int = 2, seed: int = 0, dims: dict[str, int] | None = None
) -> dict[str, np.ndarray]:
    """Inputs shaped by the signature: named dims take their size from `dims`, else `batch` on axis 0 and 8
    elsewhere."""
    rng = np.random.default_rng(seed)
    dims = dims or {}
    feeds = {}
    for spec in signature.inputs:
        shape = [
            d if isinstance(d, int) else dims.get(d, batch if axis == 0 else 8) for axis, d in enumerate(spec.shape)
        ]
        if spec.dtype.startswith("float"):
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype == "bool":
            feeds[spec.name] = rng.integers(0, 2, shape).astype(bool)
        elif spec.dtype == "string":
            feeds[spec.name] = np.array(rng.choice(["a", "b"], size=shape), dtype=object)
        else:
            feeds[spec.name] = rng.integers(0, 2, shape).astype(spec.dtype)
    return feeds
