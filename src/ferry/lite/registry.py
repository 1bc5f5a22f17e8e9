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
