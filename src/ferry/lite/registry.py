"""The kernel registry: one function per ONNX op, found by domain, name and the model's opset.

    @op("Softmax", since=13)
    def Softmax(x, *, axis=-1): ...

A kernel takes the node's inputs positionally (None for an optional input left out) and its attributes
as keyword arguments named as in the ONNX spec, and returns an array or a tuple of arrays. Ops whose
semantics changed across opsets register one variant per `since` version; the newest variant not newer
than the model's opset is used.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

KERNELS: dict[tuple[str, str], list[tuple[int, Callable]]] = {}


def op(name: str, since: int = 1, domain: str = "") -> Callable[[Callable], Callable]:
    def register(fn: Callable) -> Callable:
        variants = KERNELS.setdefault((domain, name), [])
        variants.append((since, fn))
        variants.sort(key=lambda v: v[0])
        return fn

    return register


def lookup(domain: str, name: str, opset: int) -> Callable | None:
    domain = "" if domain == "ai.onnx" else domain
    chosen = None
    for since, fn in KERNELS.get((domain, name), []):
        if since <= opset:
            chosen = fn
    return chosen


def supported() -> list[str]:
    return sorted(f"{d + '.' if d else ''}{n}" for d, n in KERNELS)


def writes_out(fn: Callable) -> Callable:
    """Mark a kernel that accepts `out=` (an arena view of the inputs' broadcast shape) and fills it."""
    fn.writes_out = True
    return fn


def fills_out(fn: Callable) -> Callable:
    """Mark a kernel that takes `out=` (its output's arena slot) whatever its inputs' shapes, and writes there
    only when the slot has the result's shape and dtype (convolutions: the output is no broadcast of the
    inputs, so the engine cannot judge the fit itself)."""
    fn.writes_out = "checked"
    return fn


def slot(out, shape: tuple, dtype) -> np.ndarray | None:
    """`out` when a kernel may write its result there: the same shape and dtype, and contiguous."""
    if out is not None and out.shape == tuple(shape) and out.dtype == dtype and out.flags.c_contiguous:
        return out
    return None
