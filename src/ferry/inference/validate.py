"""Inputs checked against the signature before anything runs. Nothing is cast silently.

Built once per predictor so that the per-run cost is a few comparisons.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ferry.dtypes import numpy_from_name
from ferry.errors import InputError
from ferry.package.manifest import Signature, TensorSpec


class _Expect:
    __slots__ = ("spec", "dtype", "rank", "fixed", "named", "is_string")

    def __init__(self, spec: TensorSpec):
        self.spec = spec
        self.is_string = spec.dtype == "string"
        self.dtype = numpy_from_name(spec.dtype)
        self.rank = len(spec.shape)
        self.fixed = [(axis, d) for axis, d in enumerate(spec.shape) if isinstance(d, int)]
        self.named = [(axis, d) for axis, d in enumerate(spec.shape) if isinstance(d, str)]


class InputChecker:
    def __init__(self, model_name: str, signature: Signature):
        self.model = model_name
        self._expect = {s.name: _Expect(s) for s in signature.inputs}
        self._names = set(self._expect)

    def prepare(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """Feeds in the form engines take, with no cast: numpy scalars (`np.float32(1.0)`) as 0-d arrays, and
        the bytes of string inputs as text. Engines keep strings as text: onnxruntime turned b"hello" into
        "b'hello'". Returns `feeds` itself when nothing needs it (the common case costs a type check)."""
        changed = None
        for name, value in feeds.items():
            if isinstance(value, np.generic):
                changed = changed or dict(feeds)
                changed[name] = value = np.asarray(value)
            exp = self._expect.get(name)
            if exp is not None and exp.is_string and isinstance(value, np.ndarray) and value.dtype.kind == "O":
                text = _as_text(value, self.model, name)
                if text is not value:
                    changed = changed or dict(feeds)
                    changed[name] = text
        return feeds if changed is None else changed

    def check(self, feeds: Mapping[str, Any]) -> None:
        if feeds.keys() != self._names:
            self._name_error(feeds)
        sizes: dict[str, tuple[str, int]] = {}
        for name, value in feeds.items():
            exp = self._expect[name]
            if not isinstance(value, np.ndarray):
                raise InputError(
                    f"model {self.model!r}, input {name!r}: expected a numpy.ndarray {exp.spec.describe()}, "
                    f"got {type(value).__name__}"
                )
            if value.dtype != exp.dtype and not (exp.is_string and value.dtype.kind in "OUS"):
                raise InputError(
                    f"model {self.model!r}, input {name!r}: expected dtype {exp.spec.dtype}, got {value.dtype} "
                    f"(ferry never casts silently; convert with .astype(np.{exp.spec.dtype}))"
                    if not exp.is_string
                    else f"model {self.model!r}, input {name!r}: expected strings, got {value.dtype}"
                )
            shape = value.shape
            if len(shape) != exp.rank:
                raise InputError(
                    f"model {self.model!r}, input {name!r}: expected rank {exp.rank} {exp.spec.describe()}, "
                    f"got rank {len(shape)} with shape {list(shape)}"
                )
            for axis, size in exp.fixed:
                if shape[axis] != size:
                    raise InputError(
                        f"model {self.model!r}, input {name!r}: expected {exp.spec.describe()}, got shape "
                        f"{list(shape)} (axis {axis} must be {size})"
                    )
            for axis, dim in exp.named:
                seen = sizes.setdefault(dim, (name, shape[axis]))
                if seen[1] != shape[axis]:
                    raise InputError(
                        f"model {self.model!r}: dimension {dim!r} is {seen[1]} in input {seen[0]!r} "
                        f"but {shape[axis]} in input {name!r}; inputs that share a dimension must agree"
                    )

    def _name_error(self, feeds: Mapping[str, Any]) -> None:
        unknown = sorted(set(feeds) - self._names)
        missing = sorted(self._names - set(feeds))
        parts = []
        if unknown:
            parts.append(f"unknown input(s) {unknown}")
        if missing:
            parts.append(f"missing input(s) {missing}")
        expected = ", ".join(e.spec.name + ": " + e.spec.describe() for e in self._expect.values())
        raise InputError(f"model {self.model!r}: {'; '.join(parts)}; the model takes {expected}")


def _as_text(array: np.ndarray, model: str, name: str) -> np.ndarray:
    """A string tensor whose elements are bytes, as UTF-8 text; `array` itself when it holds none."""
    flat = array.reshape(-1)
    if not any(isinstance(x, bytes) for x in flat):
        return array
    out = np.empty(flat.size, dtype=object)
    for i, x in enumerate(flat):
        try:
            out[i] = x.decode("utf-8") if isinstance(x, bytes) else x
        except UnicodeDecodeError as exc:
            raise InputError(
                f"model {model!r}, input {name!r}: element {i} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                "string inputs take text"
            ) from None
    return out.reshape(array.shape)
