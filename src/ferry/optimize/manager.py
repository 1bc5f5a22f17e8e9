"""Runs graph passes until none changes anything (bounded), and reports which ones did work."""

from __future__ import annotations

import logging
from collections.abc import Callable

import onnx

log = logging.getLogger("ferry.optimize")

Pass = Callable[[onnx.ModelProto], bool]  # rewrites the model in place; True when it changed something


def run_passes(model: onnx.ModelProto, passes: list[tuple[str, Pass]], max_rounds: int = 8) -> list[str]:
    applied: list[str] = []
    for _ in range(max_rounds):
        changed = False
        for name, fn in passes:
            if fn(model):
                changed = True
                if name not in applied:
                    applied.append(name)
                log.info("pass %s changed the graph", name)
        if not changed:
            break
    return applied
