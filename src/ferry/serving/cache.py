"""The response cache (Triton's, per model, opt-in): answers kept by a hash of the request's input tensors
and requested outputs, least recently used out first, within a size limit in bytes.

A model turns it on in its `config.json` (`"response_cache": {"enable": true, "max_bytes": 67108864}`).
It answers only what it can answer exactly: the key covers every input's name, dtype, shape and bytes
(for images, the encoded bytes, before decoding) and the outputs asked for; a model with a hook, or one
whose config says `"deterministic": false`, is never cached. Cached arrays are read-only, so no caller
can change what the next one gets.
"""

from __future__ import annotations

import collections
import hashlib
import threading

import numpy as np

from ferry.protocol import datatypes


def request_key(inputs: dict[str, np.ndarray], outputs: list[str] | None) -> bytes:
    h = hashlib.blake2b(digest_size=20)
    for name in sorted(inputs):
        array = inputs[name]
        h.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        if array.dtype.kind == "O":
            h.update(datatypes.serialize_bytes(array))
        else:
            h.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    h.update(repr(outputs).encode())
    return h.digest()


class ResponseCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: collections.OrderedDict[bytes, tuple[dict[str, np.ndarray], int]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> dict[str, np.ndarray] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: bytes, outputs: dict[str, np.ndarray]) -> None:
        size = sum(a.nbytes if a.dtype.kind != "O" else len(datatypes.serialize_bytes(a)) for a in outputs.values())
        if size > self.max_bytes:
            return  # larger than the whole cache: keeping it would only evict everything else
        frozen = {}
        for name, array in outputs.items():
            copy = np.array(array, copy=True)
            copy.setflags(write=False)
            frozen[name] = copy
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = (frozen, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self.bytes -= evicted

    def __len__(self) -> int:
        return len(self._entries)
