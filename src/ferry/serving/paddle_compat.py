"""Paddle Serving's HTTP formats on `POST /{model}/prediction`, so its existing clients keep working.

- WebService:  {"feed": [{"x": [...]}, ...], "fetch": ["y"]}  ->  {"result": {"y": [[...], ...]}}
  Each feed item is one sample without the batch axis; samples are stacked into one batch.
- Pipeline:    {"key": ["x"], "value": ["0.1, 0.2, ..."]}  ->  {"err_no": 0, "err_msg": "", "key": ["y"],
  "value": ["[[...]]"]}. Values are strings: a JSON array, or numbers separated by commas. One sample.
JSON carries no dtypes, so values are read as the model's declared dtype.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import numpy as np

from ferry.dtypes import numpy_from_name
from ferry.errors import RequestError
from ferry.package.manifest import Signature, TensorSpec
from ferry.protocol.tensors import array_from_values, flatten, json_nested
from ferry.serving.codec import InferRequest, loads

INPUT_PARAMS_ERROR = 5000  # Paddle Serving pipeline's code for bad input


def _sample(spec: TensorSpec, values: Any) -> np.ndarray:
    """One sample of `spec` (its shape without the batch axis) from JSON values, as strictly as OIP JSON."""
    flat = flatten(values, spec.name)
    dims = [d if isinstance(d, int) else -1 for d in spec.shape[1:]]
    known = math.prod(d for d in dims if d > 0)
    free = dims.count(-1)
    if free > 1 or (free == 0 and len(flat) != known) or (known and len(flat) % known) or (free and not known):
        raise RequestError(f"feed {spec.name!r}: {len(flat)} values do not fit one sample of shape {dims}")
    shape = tuple(len(flat) // known if d == -1 else d for d in dims)
    return array_from_values(flat, numpy_from_name(spec.dtype), shape, spec.name)


def _number(text: str) -> int | float:
    """One comma-separated number: an integer stays one (so it may feed an integer input); nan and inf are
    not numbers here."""
    text = text.strip()
    value = float(text) if any(c in text for c in ".eE") else int(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def decode(doc: Any, signature: Signature) -> tuple[InferRequest, str]:
    """The request and its form, "feed" or "pipeline"."""
    if not isinstance(doc, dict):
        raise RequestError("body must be a JSON object with 'feed' and 'fetch', or 'key' and 'value'")
    specs = {s.name: s for s in signature.inputs}
    if "feed" in doc:
        feed, fetch = doc.get("feed"), doc.get("fetch")
        if not isinstance(feed, list) or not feed or not all(isinstance(f, dict) for f in feed):
            raise RequestError("'feed' must be a non-empty list of {input name: values}")
        if not isinstance(fetch, list) or not fetch or not all(isinstance(f, str) for f in fetch):
            raise RequestError("'fetch' must name the outputs to return")
        inputs = {}
        for name, spec in specs.items():
            missing = [i for i, f in enumerate(feed) if name not in f]
            if missing:
                raise RequestError(f"feed item(s) {missing} lack input {name!r}")
            inputs[name] = np.stack([_sample(spec, f[name]) for f in feed])
        return InferRequest(inputs=inputs, outputs=[str(f) for f in fetch]), "feed"
    if "key" in doc:
        keys, values = doc.get("key"), doc.get("value")
        if not isinstance(keys, list) or not isinstance(values, list) or len(keys) != len(values):
            raise RequestError("'key' and 'value' must be lists of the same length")
        if not all(isinstance(k, str) for k in keys):
            raise RequestError(f"'key' must be a list of input names (strings), got {keys!r:.80}")
        given = dict(zip(keys, values))
        inputs = {}
        for name, spec in specs.items():
            if name not in given:
                raise RequestError(f"'key' lacks input {name!r}; the model takes {list(specs)}")
            text = given[name]
            if not isinstance(text, str):
                raise RequestError(f"value of {name!r} must be a string")
            try:
                parsed = loads(text) if text.lstrip().startswith("[") else [_number(v) for v in text.split(",")]
            except ValueError as exc:
                raise RequestError(f"value of {name!r} is not a list of numbers: {exc}") from None
            inputs[name] = _sample(spec, parsed)[None]
        return InferRequest(inputs=inputs), "pipeline"
    raise RequestError("body must hold 'feed' and 'fetch' (WebService) or 'key' and 'value' (pipeline)")


def decode_bytes(doc: Any, inputs: list[str]) -> InferRequest:
    """The pipeline form for a ferry pipeline whose inputs are encoded files (PaddleOCR's client sends
    `{"key": ["image"], "value": [base64]}`): each value is base64, one file per request."""
    if not isinstance(doc, dict) or not isinstance(doc.get("key"), list) or not isinstance(doc.get("value"), list):
        raise RequestError("send {'key': [input names], 'value': [base64 strings]}")
    given = dict(zip(doc["key"], doc["value"])) if all(isinstance(k, str) for k in doc["key"]) else {}
    missing = [n for n in inputs if not isinstance(given.get(n), str)]
    if missing or len(doc["key"]) != len(doc["value"]):
        raise RequestError(f"'key' and 'value' must give {inputs} as base64 strings")
    decoded = {}
    for name in inputs:
        try:
            data = base64.b64decode(given[name], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError(f"value of {name!r} is not base64: {exc}") from None
        array = np.empty(1, dtype=object)
        array[0] = data
        decoded[name] = array
    return InferRequest(inputs=decoded)


def encode(form: str, results: dict[str, np.ndarray]) -> dict[str, Any]:
    if form == "pipeline" and {"text", "boxes", "scores"} <= set(results):
        # PaddleOCR's answer: key "result", value the Python literal of [[(text, score), box], ...] that its
        # client reads back (with ast.literal_eval, or eval as its example does).
        lines = [
            [(t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t), float(sc)), b.tolist()]
            for t, b, sc in zip(results["text"], results["boxes"], results["scores"])
        ]
        return {"err_no": 0, "err_msg": "", "key": ["result"], "value": [repr(lines)]}
    if form == "feed":
        return {"result": {k: json_nested(v) for k, v in results.items()}}
    return {
        "err_no": 0,
        "err_msg": "",
        "key": list(results),
        "value": [json.dumps(json_nested(v)) for v in results.values()],
    }


def error(form: str, message: str) -> dict[str, Any]:
    if form == "pipeline":
        return {"err_no": INPUT_PARAMS_ERROR, "err_msg": message, "key": [], "value": [], "error": message}
    return {"error": message, "result": message}
