"""Open Inference Protocol REST bodies <-> `InferRequest` / results, with the binary tensor extension.

A body is a JSON header, optionally followed by raw tensor bytes; `Inference-Header-Content-Length`
says where the JSON ends. Every malformed body raises RequestError with what was wrong and where.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ferry.errors import RequestError
from ferry.serving import datatypes


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


def _shape(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise RequestError(f"input {name!r}: 'shape' must be a list of non-negative integers, got {value!r}")
    return tuple(value)


def decode_rest(body: bytes, header_length: int | None) -> InferRequest:
    if header_length is None:
        header, binary = body, b""
    else:
        if header_length < 0 or header_length > len(body):
            raise RequestError(f"Inference-Header-Content-Length is {header_length} but the body has {len(body)} bytes")
        # A view, not a slice: a 600 KB image tensor is then never copied before the batch is merged.
        header, binary = body[:header_length], memoryview(body)[header_length:]
    try:
        doc = json.loads(header)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from None
    doc = _object(doc, "request body")
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
        shape = _shape(tensor.get("shape"), name)
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


def array_from_bytes(raw: bytes | memoryview, dtype: np.dtype, shape: tuple[int, ...], name: str) -> np.ndarray:
    count = math.prod(shape)
    if dtype.kind == "O":
        return datatypes.deserialize_bytes(bytes(raw), count, name).reshape(shape)
    if len(raw) != count * dtype.itemsize:
        raise RequestError(
            f"input {name!r}: shape {list(shape)} of {dtype.name} needs {count * dtype.itemsize} bytes, got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list) and data and isinstance(data[0], list):
        return [x for item in data for x in _flatten(item)]
    return data if isinstance(data, list) else [data]


def array_from_json(data: Any, dtype: np.dtype, shape: tuple[int, ...], name: str) -> np.ndarray:
    if data is None:
        raise RequestError(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
    flat = _flatten(data)
    count = math.prod(shape)
    if len(flat) != count:
        raise RequestError(f"input {name!r}: shape {list(shape)} needs {count} elements, 'data' has {len(flat)}")
    if dtype.kind == "O":
        if not all(isinstance(x, str) for x in flat):
            raise RequestError(f"input {name!r}: BYTES data in JSON must be strings")
        array = np.empty(count, dtype=object)
        array[:] = flat
        return array.reshape(shape)
    try:
        array = np.asarray(flat, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise RequestError(f"input {name!r}: data is not {datatypes.from_numpy(dtype)}: {exc}") from None
    if dtype.kind in "iub" and any(isinstance(x, float) and not float(x).is_integer() for x in flat[:64]):
        raise RequestError(f"input {name!r}: {datatypes.from_numpy(dtype)} data holds non-integer numbers")
    return array.reshape(shape)


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
        elif array.dtype.kind in "OUS":
            entry["data"] = [
                x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in array.reshape(-1)
            ]
        else:
            entry["data"] = array.reshape(-1).tolist()
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": outputs}
    if request.id:
        doc["id"] = request.id
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)
