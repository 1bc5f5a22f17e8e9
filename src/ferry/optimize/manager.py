"""The pass framework: a pass is a name, a function and whether it needs inferred shapes; the manager runs
a list of them until none changes anything (bounded), provides shapes to the passes that need them, and
names the failing pass and the passes before it when one raises.

A pass function rewrites the model in place and returns a PassResult saying what it did, by count.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import onnx

from ferry.errors import OptimizeError

log = logging.getLogger("ferry.optimize")


@dataclass
class PassResult:
    model: onnx.ModelProto
    counts: dict[str, int] = field(default_factory=dict)  # e.g. {"folded": 12}; all zero: nothing changed

    @property
    def changed(self) -> bool:
        return any(self.counts.values())


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[onnx.ModelProto], PassResult]
    needs_shapes: bool = False  # the manager infers shapes first when the graph changed since it last did


@dataclass
class Report:
    """What a run of passes did: each pass that changed the graph, with its counts summed over rounds."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    rounds: int = 0

    @property
    def applied(self) -> list[str]:
        return list(self.counts)

    def add(self, name: str, counts: dict[str, int]) -> None:
        mine = self.counts.setdefault(name, {})
        for key, n in counts.items():
            mine[key] = mine.get(key, 0) + n

    def summary(self) -> str:
        if not self.counts:
            return "none"
        return ", ".join(
            f"{name} ({', '.join(f'{k} {n}' for k, n in c.items() if n)})" for name, c in self.counts.items()
        )


def run_passes(
    model: onnx.ModelProto,
    passes: list[Pass],
    infer_shapes: Callable[[onnx.ModelProto], object] | None = None,
    max_rounds: int = 8,
) -> Report:
    report = Report()
    ran: list[str] = []
    stale = True  # shapes: inferred before the first pass that needs them
    for _ in range(max_rounds):
        report.rounds += 1
        changed = False
        for p in passes:
            if p.needs_shapes and stale and infer_shapes is not None:
                infer_shapes(model)
                stale = False
            try:
                result = p.run(model)
            except Exception as exc:
                before = ", ".join(dict.fromkeys(ran)) or "none"
                raise OptimizeError(
                    f"optimizer pass {p.name!r} failed: {type(exc).__name__}: {exc} (passes run before it: {before})"
                ) from exc
            ran.append(p.name)
            if result.changed:
                changed = stale = True
                report.add(p.name, result.counts)
                log.info("pass %s: %s", p.name, result.counts)
        if not changed:
            break
    return report
