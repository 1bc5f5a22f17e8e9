"""Processing functions for pipeline steps (`stages.py`): ferry's built-in ones by name, or any importable
`module:function`, or `module:Class` (a hook class, made once; its instances are called). That is code: it
runs in the server with its rights, like `--hook`.

A function takes numpy arrays (or, in a gather step, lists of them) as keyword arguments named after its
step's inputs, and returns a dict of its outputs, a tuple in the order the step lists them, or (for one
output) the value.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from ferry.errors import ConfigError

BUILTIN: dict[str, Callable[..., Any]] = {}


def builtin(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        BUILTIN[name] = fn
        return fn

    return register


def resolve(spec: str) -> Callable[..., Any]:
    """A built-in function's name, or `module:function`."""
    if spec.startswith("ocr.") and spec not in BUILTIN:
        import ferry.ocr  # noqa: F401  (registers PP-OCR's steps; needs the ocr extra)
    if spec in BUILTIN:
        return BUILTIN[spec]
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"pipeline function {spec!r}: not a built-in ({sorted(BUILTIN)}) nor module:function")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"pipeline function {spec!r}: {type(exc).__name__}: {exc}") from None
    if isinstance(fn, type):  # a hook class: made once, its instance called per step (it may hold state)
        try:
            fn = fn()
        except Exception as exc:
            raise ConfigError(f"pipeline function {spec!r}: {type(exc).__name__}: {exc}") from None
    if not callable(fn):
        raise ConfigError(f"pipeline function {spec!r} is not callable")
    return fn


@builtin("rows")
def rows(**tensors: np.ndarray) -> tuple[list[np.ndarray], ...]:
    """Fan out along axis 0: every row of each input becomes one item (kept with its axis, as [1, ...]).
    Outputs are the inputs in order, under the step's output names."""
    return tuple([array[i : i + 1] for i in range(len(array))] for array in tensors.values())


@builtin("stack")
def stack(**lists: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Gather by concatenating the items along axis 0 (the inverse of `rows`), in input order."""
    return tuple(np.concatenate(items) if items else np.zeros((0,), np.float32) for items in lists.values())
