"""Output postprocessing steps: softmax, topk, labels. Works on one output array with a batch axis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ferry.errors import InputError


def softmax(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = scores - scores.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def topk(scores: np.ndarray, k: int = 5) -> dict[str, np.ndarray]:
    k = min(k, scores.shape[-1])
    idx = np.argsort(-scores, axis=-1, kind="stable")[..., :k]
    return {"indices": idx, "scores": np.take_along_axis(scores, idx, axis=-1)}


POSTPROCESS_OPS: dict[str, Callable[..., Any]] = {"softmax": softmax, "topk": topk}


def postprocess(
    scores: np.ndarray, steps: list[dict[str, Any]], labels: list[str] | None = None
) -> list[list[dict[str, Any]]] | np.ndarray:
    """Apply `steps`; after `topk`, return per sample a list of {index, label, score}."""
    value: Any = scores
    for step in steps:
        op = step["op"]
        args = {k: v for k, v in step.items() if k != "op"}
        if op == "labels":
            continue  # labels are attached to the topk result below
        if op not in POSTPROCESS_OPS:
            raise InputError(f"unknown postprocessing step {op!r}; known: {sorted(POSTPROCESS_OPS) + ['labels']}")
        if isinstance(value, dict):
            raise InputError("topk must be the last numeric postprocessing step")
        value = POSTPROCESS_OPS[op](value, **args)
    if not isinstance(value, dict):
        return value
    results = []
    for idx_row, score_row in zip(value["indices"], value["scores"]):
        results.append(
            [
                {
                    "index": int(i),
                    "label": labels[int(i)] if labels and int(i) < len(labels) else str(int(i)),
                    "score": float(s),
                }
                for i, s in zip(idx_row, score_row)
            ]
        )
    return results
