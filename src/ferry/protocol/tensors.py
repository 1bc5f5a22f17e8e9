"""Tensors on the wire, for every protocol: raw bytes, JSON values, BYTES elements.

Two rules hold for every decoder here:
- Sizes first. What a declared shape implies is checked against what the body holds before anything is
  allocated (a 122-byte request declaring 2**28 BYTES elements once cost 2.2 GB).
- Nothing is cast or invented. A JSON value is taken only when it is exactly of the declared type: no
  strings or booleans into numbers, no fractions into integers, nothing out of the type's range (JSON
  itself has no NaN or Infinity; `serving.codec.loads` refuses them). The error names the tensor, the
  element's index, what was expected and what came.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ferry.errors import RequestError
from ferry.protocol import datatypes

MAX_RANK = 32  # numpy stops at 64; models seen here use at most 8
MAX_EXTENT = 2**40  # elements in a tensor (ignoring zero dimensions): far past any body limit


def check_shape(value: Any, name: str) -> tuple[int, ...]:
    """A declared shape: a list of non-negative integers, of a rank numpy can hold."""
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise RequestError(f"input {name!r}: 'shape' must be a list of non-negative integers, got {value!r}")
    if len(value) > MAX_RANK:
        raise RequestError(f"input {name!r}: rank {len(value)} is over the limit of {MAX_RANK}")
    # numpy refuses shapes whose extent overflows its index type, even when a 0 makes them empty.
    if math.prod(d for d in value if d) > MAX_EXTENT:
        raise RequestError(f"input {name!r}: shape {list(value)} is larger than any tensor can be")
    return tuple(value)


def array_from_bytes(raw: bytes | memoryview, dtype: np.dtype, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Raw tensor bytes (binary extension, gRPC raw contents) as an array of `shape`."""
    count = math.prod(shape)
    if dtype.kind == "O":
        # Every element carries a 4-byte length: a shape that needs more than the data holds is refused here,
        # before an array of `count` slots exists.
        if count * 4 > len(raw):
            raise RequestError(
                f"input {name!r}: shape {list(shape)} declares {count} BYTES elements, which need at least "
                f"{count * 4} bytes; the data has {len(raw)}"
            )
        return datatypes.deserialize_bytes(bytes(raw), count, name).reshape(shape)
    if len(raw) != count * dtype.itemsize:
        raise RequestError(
            f"input {name!r}: shape {list(shape)} of {dtype.name} needs {count * dtype.itemsize} bytes, got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)


def flatten(data: Any, name: str) -> list[Any]:
    """JSON data, flat or nested as the shape, as one flat list (level by level: no recursion)."""
    if not isinstance(data, list):
        return [data]
    level, depth = data, 0
    while level and isinstance(level[0], list):
        depth += 1
        if depth > MAX_RANK:
            raise RequestError(f"input {name!r}: 'data' is nested deeper than the rank limit of {MAX_RANK}")
        if not all(isinstance(x, list) for x in level):
            raise RequestError(f"input {name!r}: 'data' mixes lists and values at one depth")
        level = [x for sub in level for x in sub]
    return level


def array_from_json(data: Any, dtype: np.dtype, shape: tuple[int, ...], name: str) -> np.ndarray:
    """A JSON tensor's 'data' (flat or nested) as an array of `shape`."""
    if data is None:
        raise RequestError(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
    return array_from_values(flatten(data, name), dtype, shape, name)


# What a value may be, per kind of numpy dtype: JSON has no dtypes, so the Python type is the evidence.
_ALLOWED = {"b": {bool}, "i": {int, float}, "u": {int, float}, "f": {int, float}, "O": {str, bytes}}
_NARROW_MAX = {np.dtype(t): float(np.finfo(t).max) for t in (np.float16, np.float32)}
_WANTED = {"b": "true or false", "i": "an integer", "u": "a non-negative integer", "f": "a number", "O": "a string"}


def array_from_values(values: list[Any], dtype: np.dtype, shape: tuple[int, ...], name: str) -> np.ndarray:
    """A flat list of Python values (JSON data, gRPC typed contents) as an array of `shape`, checked whole."""
    count = math.prod(shape)
    if len(values) != count:
        raise RequestError(f"input {name!r}: shape {list(shape)} needs {count} elements, the data has {len(values)}")
    kind = dtype.kind
    allowed = _ALLOWED[kind]
    types = set(map(type, values))
    if not types <= allowed:
        _refuse(values, lambda x: type(x) not in allowed, dtype, name)
    if kind == "O":
        array = np.empty(count, dtype=object)
        array[:] = values
        return array.reshape(shape)
    if kind in "iu" and float in types:
        # Integral floats (3.0) are integers in JSON's eyes; 2.9 is not, nor anything out of range.
        as_float = np.asarray(values, dtype=np.float64)
        info = np.iinfo(dtype)
        bad = ~np.isfinite(as_float) | (as_float != np.floor(as_float)) | (as_float < info.min) | (as_float > info.max)
        if bad.any():
            i = int(np.argmax(bad))
            raise RequestError(_message(name, i, values[i], dtype))
        return as_float.astype(dtype).reshape(shape)
    if kind == "f" and dtype in _NARROW_MAX and values:
        # A narrowing cast turns what does not fit into inf: refuse it first. The largest magnitude is found in
        # C (max over abs); JSON has no NaN or Infinity (the decoder refuses them), so nothing hides from it.
        limit = _NARROW_MAX[dtype]
        if max(map(abs, values)) > limit:
            _refuse(values, lambda x: abs(x) > limit, dtype, name, "a finite number within its range")
    try:
        array = np.asarray(values, dtype=dtype)
    except (OverflowError, ValueError, TypeError):
        _refuse(values, lambda x: not _fits(x, dtype), dtype, name)
        raise  # _refuse always raises; this keeps type checkers content
    return array.reshape(shape)


def _fits(value: Any, dtype: np.dtype) -> bool:
    try:
        np.asarray([value], dtype=dtype)
    except (OverflowError, ValueError, TypeError):
        return False
    return True


def _refuse(values: list[Any], bad, dtype: np.dtype, name: str, wanted: str | None = None) -> None:
    i = next(i for i, x in enumerate(values) if bad(x))
    raise RequestError(_message(name, i, values[i], dtype, wanted))


def _message(name: str, index: int, value: Any, dtype: np.dtype, wanted: str | None = None) -> str:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
    what = wanted or _WANTED[dtype.kind] + (" within its range" if dtype.kind in "iuf" else "")
    return (
        f"input {name!r}: element {index} is {shown} ({type(value).__name__}); "
        f"{datatypes.from_numpy(dtype)} takes {what}"
    )


def json_values(array: np.ndarray) -> list[Any]:
    """An output as a flat JSON list. NaN and infinities, which JSON has no numbers for, become the strings
    "NaN", "Infinity" and "-Infinity" (numpy, and so tritonclient's as_numpy, reads them back)."""
    flat = array.reshape(-1)
    if flat.dtype.kind in "OUS":
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in flat]
    values = flat.tolist()
    # A check in C over the Python floats already made costs a 10-value output less than a numpy call.
    if flat.dtype.kind == "f" and not all(map(math.isfinite, values)):
        names = {math.inf: "Infinity", -math.inf: "-Infinity"}
        values = [v if math.isfinite(v) else names.get(v, "NaN") for v in values]
    return values


def json_nested(array: np.ndarray) -> Any:
    """An output as nested JSON lists of its shape, with `json_values`' spelling of NaN and infinities."""
    if array.dtype.kind in "OUS" or (array.dtype.kind == "f" and not np.isfinite(array).all()):
        return np.array(json_values(array), dtype=object).reshape(array.shape).tolist()
    return array.tolist()


def array_from_answer(data: Any, dtype: np.dtype, shape: tuple[int, ...], name: str) -> np.ndarray:
    """An output read from a server's JSON answer: as `array_from_json`, and "NaN", "Infinity" and
    "-Infinity" are read back as floats (see `json_values`)."""
    values = flatten(data, name)
    if dtype.kind == "f" and str in set(map(type, values)):
        specials = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
        values = [specials.get(v, v) if isinstance(v, str) else v for v in values]
        count = math.prod(shape)
        if len(values) != count or not set(map(type, values)) <= {int, float}:
            raise RequestError(f"output {name!r}: the answer's data is not {count} numbers")
        return np.asarray(values, dtype=dtype).reshape(shape)
    return array_from_json(values, dtype, shape, name)
