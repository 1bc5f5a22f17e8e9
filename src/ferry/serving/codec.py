"""Open Inference Protocol REST bodies <-> `InferRequest` / results, with the binary tensor extension.

A body is a JSON header, optionally followed by raw tensor bytes; `Inference-Header-Content-Length`
says where the JSON ends. Every malformed body raises RequestError with what was wrong and where.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ferry.errors import RequestError
from ferry.protocol import datatypes
from ferry.protocol.tensors import array_from_bytes, array_from_json, check_shape, json_values


@dataclass
class InferRequest:
    inputs: dict[str, np.ndarray]
    outputs: list[str] | None = None  # None: every output
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    binary_outputs: dict[str, bool] = field(default_factory=dict)  # per requested output
    binary_default: bool = False  # request-level binary_data_output


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RequestError(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


# One decoder, made once: json.loads(text, parse_constant=...) builds a new one per call, which cost a small
# request about 4 us of the event loop's time.
_STRICT = json.JSONDecoder(parse_constant=_no_constant)


def loads(text: bytes | str) -> Any:
    """Strict JSON for request bodies: NaN and Infinity are not JSON; depth and digit counts are bounded by
    Python's own limits, and going past them is the client's error, not the server's."""
    try:
        return _STRICT.decode(text.decode("utf-8") if isinstance(text, (bytes, bytearray)) else text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        reason = "nested too deep" if isinstance(exc, RecursionError) else str(exc)
        raise RequestError(f"request body is not valid JSON: {reason}") from None


HEADER_LENGTH = "inference-header-content-length"  # the JSON's length when binary tensors follow it
_SAFE_DIGITS = re.compile(r"[0-9]{1,12}")


def header_length(value: str | None) -> int | None:
    """The Inference-Header-Content-Length header as a number (None when absent); a RequestError otherwise."""
    if value is None:
        return None
    if not _SAFE_DIGITS.fullmatch(value.strip()):
        raise RequestError(f"Inference-Header-Content-Length must be a number, got {value[:40]!r}")
    return int(value)


def decode_rest(body: bytes, header_length: int | None) -> InferRequest:
    if header_length is None:
        header, binary = body, b""
    else:
        if header_length < 0 or header_length > len(body):
            raise RequestError(f"Inference-Header-Content-Length is {header_length} but the body has {len(body)} bytes")
        # A view, not a slice: a 600 KB image tensor is then never copied before the batch is merged.
        header, binary = body[:header_length], memoryview(body)[header_length:]
    doc = _object(loads(header), "request body")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise RequestError("request body needs 'inputs': a non-empty list of tensors")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for i, tensor in enumerate(raw_inputs):
        tensor = _object(tensor, f"inputs[{i}]")
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            raise RequestError(f"inputs[{i}] needs a 'name'")
        if name in inputs:
            raise RequestError(f"input {name!r} is given twice")
        shape = check_shape(tensor.get("shape"), name)
        datatype = tensor.get("datatype")
        dtype = datatypes.to_numpy(datatype if isinstance(datatype, str) else repr(datatype), name)
        params = tensor.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise RequestError(
                    f"input {name!r}: binary_data_size {size!r} does not fit the {len(binary) - offset} "
                    "binary bytes left in the body"
                )
            inputs[name] = array_from_bytes(binary[offset : offset + size], dtype, shape, name)
            offset += size
        else:
            inputs[name] = array_from_json(tensor.get("data"), dtype, shape, name)
            if dtype.kind == "O" and isinstance(params, dict) and params.get("content_type") == "base64":
                inputs[name] = _unbase64(inputs[name], name)
    if offset != len(binary):
        raise RequestError(f"{len(binary) - offset} bytes of binary data follow the inputs but no input claims them")

    request = InferRequest(inputs=inputs, id=str(doc.get("id", "")))
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise RequestError("'parameters' must be a JSON object")
    request.parameters = params
    request.binary_default = bool(params.get("binary_data_output", False))
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise RequestError("'outputs' must be a list of {name, parameters}")
        request.outputs = []
        for i, out in enumerate(raw_outputs):
            out = _object(out, f"outputs[{i}]")
            if not isinstance(out.get("name"), str):
                raise RequestError(f"outputs[{i}] needs a 'name'")
            request.outputs.append(out["name"])
            oparams = out.get("parameters") or {}
            if isinstance(oparams, dict) and "binary_data" in oparams:
                request.binary_outputs[out["name"]] = bool(oparams["binary_data"])
    return request


def _unbase64(array: np.ndarray, name: str) -> np.ndarray:
    out = np.empty(array.size, dtype=object)
    for i, text in enumerate(array.flat):
        try:
            out[i] = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError(f"input {name!r}: element {i} is not valid base64 ({exc})") from None
    return out.reshape(array.shape)


def encode_rest(
    request: InferRequest, results: dict[str, np.ndarray], model: str, version: str
) -> tuple[bytes, int | None]:
    """The response body and, when binary tensors follow the JSON, the JSON's length."""
    outputs, chunks = [], []
    for name, array in results.items():
        entry: dict[str, Any] = {
            "name": name,
            "datatype": datatypes.from_numpy(array.dtype),
            "shape": list(array.shape),
        }
        if request.binary_outputs.get(name, request.binary_default):
            raw = (
                datatypes.serialize_bytes(array) if array.dtype.kind in "OUS" else np.ascontiguousarray(array).tobytes()
            )
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = json_values(array)
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": outputs}
    if request.id:
        doc["id"] = request.id
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)
