"""The compact `.flite` file: a small JSON header, then the weights, raw and aligned, loaded by memory map.

    offset 0   b"FLITE\\0"  magic
           6   uint16      format version
           8   uint64      header length in bytes (little endian)
          16   header      UTF-8 JSON: the graph in execution order, tensor metadata, memory plans
           ..  padding     to a multiple of 64
           ..  weights     each at a 64-byte-aligned offset given in the header

Weights can be stored as int8 with one float32 scale per output channel ("weight-only int8"). They are
dequantised to float32 when the file loads: that makes the file about 4x smaller, not the model faster.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FormatError
from .graph import Graph, Node, Value
from .planner import Plan

MAGIC = b"FLITE\x00"
VERSION = 1
ALIGN = 64
_PREFIX = struct.Struct("<6sHQ")


class _Writer:
    def __init__(self, int8_min_elements: int | None):
        self.blobs: list[tuple[int, bytes]] = []
        self.size = 0
        self.int8_min = int8_min_elements
        self.count = 0

    def add(self, array: np.ndarray) -> dict[str, Any]:
        if array.dtype == object:
            return {"dtype": "object", "shape": list(array.shape), "values": [str(v) for v in array.reshape(-1)]}
        meta: dict[str, Any] = {"dtype": array.dtype.name, "shape": list(array.shape)}
        if self.int8_min is not None and array.dtype == np.float32 and array.ndim >= 2 and array.size >= self.int8_min:
            # Symmetric per-channel int8 along axis 0 (output channels of Conv, rows of Gemm weights).
            flat = array.reshape(array.shape[0], -1)
            scale = np.abs(flat).max(axis=1) / 127.0
            scale[scale == 0] = 1.0
            q = np.clip(np.rint(flat / scale[:, None]), -127, 127).astype(np.int8)
            meta["int8"] = {"scales": self._blob(scale.astype(np.float32)), "nbytes": q.nbytes}
            meta["offset"] = self._blob(q)
            return meta
        meta["offset"] = self._blob(np.ascontiguousarray(array))
        meta["nbytes"] = array.nbytes
        return meta

    def _blob(self, array: np.ndarray) -> int:
        offset = (self.size + ALIGN - 1) // ALIGN * ALIGN
        self.blobs.append((offset, array.tobytes()))
        self.size = offset + array.nbytes
        return offset


def _encode_attr(value: Any, w: _Writer) -> Any:
    if isinstance(value, Graph):
        return {"graph": _encode_graph(value, w)}
    if isinstance(value, np.ndarray):
        return {"tensor": w.add(value)}
    if isinstance(value, list) and value and isinstance(value[0], (Graph, np.ndarray)):
        return {"list": [_encode_attr(v, w) for v in value]}
    return {"value": value}


def _encode_graph(g: Graph, w: _Writer) -> dict[str, Any]:
    return {
        "name": g.name,
        "opsets": g.opsets,
        "inputs": [[v.name, v.dtype, v.shape] for v in g.inputs],
        "outputs": [[v.name, v.dtype, v.shape] for v in g.outputs],
        "weights": {name: w.add(a) for name, a in g.weights.items()},
        "nodes": [
            {
                "op": n.op,
                "domain": n.domain,
                "name": n.name,
                "inputs": n.inputs,
                "outputs": n.outputs,
                "attrs": {k: _encode_attr(v, w) for k, v in n.attrs.items()},
            }
            for n in g.nodes
        ],  # fmt: skip
    }


def save(graph: Graph, path: str | Path, plans: dict[str, Plan] | None = None, int8_min_elements: int | None = None):
    """Write `graph` (and named memory plans) to `path`. `int8_min_elements`: store float32 weights of at
    least that many elements as per-channel int8."""
    w = _Writer(int8_min_elements)
    header = {
        "format": VERSION,
        "graph": _encode_graph(graph, w),
        "plans": {key: p.to_json() for key, p in (plans or {}).items()},
    }
    body = json.dumps(header, separators=(",", ":")).encode("utf-8")
    start = (_PREFIX.size + len(body) + ALIGN - 1) // ALIGN * ALIGN
    # Whole or not at all (ferry.files.atomic_write's rule, kept here because lite imports no ferry module):
    # a full disk or Ctrl-C leaves the previous file in place and no partial one beside it.
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(_PREFIX.pack(MAGIC, VERSION, len(body)))
            f.write(body)
            f.write(b"\0" * (start - _PREFIX.size - len(body)))
            for offset, data in w.blobs:
                f.seek(start + offset)
                f.write(data)
            f.truncate(start + w.size)
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


class _Reader:
    def __init__(self, path: Path):
        self.path = path
        size = path.stat().st_size
        if size < _PREFIX.size:
            raise FormatError(f"{path}: {size} bytes is too short for a lite model")
        with open(path, "rb") as f:
            magic, version, length = _PREFIX.unpack(f.read(_PREFIX.size))
            if magic != MAGIC:
                raise FormatError(f"{path}: not a lite model (magic {magic!r}, expected {MAGIC!r})")
            if version != VERSION:
                raise FormatError(f"{path}: format version {version}; this runtime reads version {VERSION}")
            if _PREFIX.size + length > size:
                raise FormatError(f"{path}: header of {length} bytes runs past the end of the file ({size} bytes)")
            try:
                self.header = json.loads(f.read(length).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise FormatError(f"{path}: header is not valid JSON ({exc})") from None
        self.start = (_PREFIX.size + length + ALIGN - 1) // ALIGN * ALIGN
        self.map = np.memmap(path, dtype=np.uint8, mode="r") if size > self.start else np.zeros(0, np.uint8)
        self.data_size = size - self.start

    def array(self, meta: dict[str, Any]) -> np.ndarray:
        shape = tuple(meta["shape"])
        if meta["dtype"] == "object":
            return np.array(meta["values"], dtype=object).reshape(shape)
        if "int8" in meta:
            q = self._view(meta["offset"], np.dtype(np.int8), meta["int8"]["nbytes"])
            scales = self._view(meta["int8"]["scales"], np.dtype(np.float32), 4 * shape[0])
            return (q.reshape(shape[0], -1) * scales[:, None]).astype(np.float32).reshape(shape)
        dtype = _dtype(meta["dtype"])
        return self._view(meta["offset"], dtype, meta["nbytes"]).reshape(shape)

    def _view(self, offset: int, dtype: np.dtype, nbytes: int) -> np.ndarray:
        if offset < 0 or offset + nbytes > self.data_size:
            raise FormatError(f"{self.path}: a tensor at offset {offset} ({nbytes} bytes) lies outside the file")
        return self.map[self.start + offset : self.start + offset + nbytes].view(dtype)


def _dtype(name: str) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes  # bfloat16, float8, int4: only for the models that hold them

        return np.dtype(getattr(ml_dtypes, name))


def _decode_attr(value: dict[str, Any], r: _Reader) -> Any:
    if "graph" in value:
        return _decode_graph(value["graph"], r)
    if "tensor" in value:
        return r.array(value["tensor"])
    if "list" in value:
        return [_decode_attr(v, r) for v in value["list"]]
    return value["value"]


def _decode_graph(g: dict[str, Any], r: _Reader) -> Graph:
    return Graph(
        nodes=[
            Node(
                n["op"],
                n["inputs"],
                n["outputs"],
                {k: _decode_attr(v, r) for k, v in n["attrs"].items()},
                n["domain"],
                n["name"],
            )
            for n in g["nodes"]
        ],  # fmt: skip
        inputs=[Value(*v) for v in g["inputs"]],
        outputs=[Value(*v) for v in g["outputs"]],
        weights={name: r.array(meta) for name, meta in g["weights"].items()},
        opsets=g["opsets"],
        name=g["name"],
    )


def load_graph(path: str | Path) -> tuple[Graph, dict[str, Plan]]:
    reader = _Reader(Path(path))
    try:
        graph = _decode_graph(reader.header["graph"], reader)
        plans = {key: Plan.from_json(p) for key, p in reader.header.get("plans", {}).items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{path}: malformed header ({type(exc).__name__}: {exc})") from None
    return graph, plans
