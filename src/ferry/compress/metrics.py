"""Accuracy-style metrics. Each takes the model's first output over the whole dataset, and either the labels
or the same output of a reference model; each returns a value where higher is better, in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ferry.errors import InputError


def top_k(scores: np.ndarray, labels: Sequence[Any], k: int = 1) -> float:
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise InputError(f"top-{k} accuracy needs integer class labels, got {labels.dtype} (e.g. {labels[:3]})")
    best = np.argsort(-scores.reshape(len(scores), -1), axis=1, kind="stable")[:, :k]
    return float(np.mean((best == labels[:, None]).any(axis=1)))


def agreement(scores: np.ndarray, reference: np.ndarray) -> float:
    """How often the top-1 class equals the reference model's top-1 class."""
    flat = scores.reshape(len(scores), -1)
    return float(np.mean(flat.argmax(axis=1) == reference.reshape(len(reference), -1).argmax(axis=1)))


def cosine(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Mean cosine similarity of each sample's output (flattened) to the reference's."""
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(np.sum(a * b, axis=1) / np.where(norms == 0, 1, norms)))


def ctc_decode(scores: np.ndarray, alphabet: Sequence[str], blank: int = 0) -> list[tuple[str, float]]:
    """Best path decoding of (batch, time, classes) scores: argmax per step, merge repeats, drop blanks.
    `alphabet[i]` is the character of class i (class `blank` has none). Each text comes with the mean
    of its characters' best scores (their probabilities, when the scores are a softmax)."""
    decoded = []
    for row in scores:
        best, confidence = row.argmax(axis=-1), row.max(axis=-1)
        keep = np.ones(len(best), bool)
        keep[1:] = best[1:] != best[:-1]
        keep &= (best != blank) & (best < len(alphabet))
        text = "".join(alphabet[i] for i in best[keep])
        decoded.append((text, float(confidence[keep].mean()) if keep.any() else 0.0))
    return decoded


def ctc_greedy(scores: np.ndarray, alphabet: Sequence[str], blank: int = 0) -> list[str]:
    """The texts of `ctc_decode`."""
    return [text for text, _ in ctc_decode(scores, alphabet, blank)]


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions of one character each."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def line_accuracy(got: str, want: str, ignore_spaces: bool = True) -> float:
    """One recognised line against its ground truth: 1 - edit distance / length, at least 0. Spaces are left
    out by default (recognisers differ on spaces between capitals, which is not what is measured)."""
    if ignore_spaces:
        got, want = got.replace(" ", ""), want.replace(" ", "")
    return max(0.0, 1 - edit_distance(got, want) / max(len(want), 1))


def char_accuracy(scores: np.ndarray, labels: Sequence[str], alphabet: Sequence[str]) -> float:
    """1 - (total edit distance / total label length), decoding the scores with CTC best path."""
    if not alphabet:
        raise InputError("character accuracy needs the package's labels (the character dictionary)")
    texts = ctc_greedy(scores, alphabet)
    errors = sum(edit_distance(t, str(label)) for t, label in zip(texts, labels))
    total = sum(len(str(label)) for label in labels) or 1
    return max(0.0, 1.0 - errors / total)


NEEDS_LABELS = {"top1", "top5", "char_accuracy"}
NEEDS_REFERENCE = {"agreement", "cosine"}
METRICS = sorted(NEEDS_LABELS | NEEDS_REFERENCE)


def score(metric: str, scores: np.ndarray, labels: Sequence[Any] | None, reference: np.ndarray | None,
          alphabet: Sequence[str] = ()) -> float:  # fmt: skip
    """`metric` of a model's first output: against `labels` (NEEDS_LABELS) or `reference`, another model's
    same output on the same samples (NEEDS_REFERENCE)."""
    if metric in NEEDS_LABELS and labels is None:
        raise InputError(f"metric {metric!r} needs labels, and the data has none")
    if metric in ("top1", "top5"):
        return top_k(scores, labels, 1 if metric == "top1" else 5)
    if metric == "char_accuracy":
        return char_accuracy(scores, labels, alphabet)
    return (agreement if metric == "agreement" else cosine)(scores, reference)
