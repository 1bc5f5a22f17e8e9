"""Client-side Open Inference Protocol bodies: requests out, responses in (both protocols)."""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferry.errors import FerryError, InputError, error_for_status
from ferry.protocol import datatypes
from ferry.protocol.tensors import array_from_answer, array_from_bytes


@dataclass(frozen=True)
class ClientTls:
    """TLS for `Client`: the CA that signed the server's certificate (None: the system's), and a client
    certificate and key for servers that ask for one (mTLS)."""

    ca: str | Path | None = None
    cert: str | Path | None = None
    key: str | Path | None = None

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
        if self.cert:
            context.load_cert_chain(str(self.cert), str(self.key) if self.key else None)
        return context

    def grpc_credentials(self) -> Any:
        import grpc

        read = lambda p: Path(p).read_bytes() if p else None  # noqa: E731
        return grpc.ssl_channel_credentials(read(self.ca), read(self.key), read(self.cert))


def as_inputs(inputs: dict[str, np.ndarray] | np.ndarray, name: str | None) -> dict[str, np.ndarray]:
    if isinstance(inputs, dict):
        return {k: np.asarray(v) for k, v in inputs.items()}
    if name is None:
        raise InputError("pass a dict of arrays, or input_name= with a single array")
    return {name: np.asarray(inputs)}


def tensor_bytes(array: np.ndarray) -> bytes:
    if array.dtype.kind in "OUS":
        return datatypes.serialize_bytes(array)
    return np.ascontiguousarray(array).tobytes()


def rest_request(inputs: dict[str, np.ndarray], outputs: list[str] | None, binary: bool) -> tuple[bytes, int | None]:
    entries, chunks = [], []
    for name, array in inputs.items():
        entry: dict[str, Any] = {
            "name": name,
            "shape": list(array.shape),
            "datatype": datatypes.from_numpy(array.dtype),
        }
        if binary:
            raw = tensor_bytes(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif array.dtype.kind in "OUS":
            entry["data"] = [x.decode() if isinstance(x, bytes) else str(x) for x in array.flat]
        else:
            entry["data"] = array.ravel().tolist()
        entries.append(entry)
    doc: dict[str, Any] = {"inputs": entries}
    if outputs is not None:
        doc["outputs"] = [{"name": o, "parameters": {"binary_data": binary}} for o in outputs]
    elif binary:
        doc["parameters"] = {"binary_data_output": True}
    header = json.dumps(doc, separators=(",", ":")).encode()
    return (header + b"".join(chunks), len(header)) if chunks else (header, None)


def rest_response(body: bytes, header_length: int | None) -> dict[str, np.ndarray]:
    header = body if header_length is None else body[:header_length]
    binary = b"" if header_length is None else body[header_length:]
    doc = json.loads(header)
    out, offset = {}, 0
    for tensor in doc.get("outputs", []):
        dtype = datatypes.to_numpy(tensor["datatype"], tensor["name"])
        shape = tuple(tensor["shape"])
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            out[tensor["name"]] = array_from_bytes(binary[offset : offset + size], dtype, shape, tensor["name"])
            offset += size
        else:
            out[tensor["name"]] = array_from_answer(tensor["data"], dtype, shape, tensor["name"])
    return out


def error_for(status: int, body: bytes) -> FerryError:
    try:
        message = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        message = body[:200].decode("utf-8", "replace")
    return error_for_status(http_status=status)(f"server answered {status}: {message}")
