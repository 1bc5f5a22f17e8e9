"""Pre- and postprocessing in the server: raw image bytes in, labels with scores out.

When a model's package declares preprocessing and a request sends its image input as BYTES (encoded
images, one per batch row), the server decodes them through the declared steps before queueing. When the
package declares a top-k postprocessing step, the answer then also carries `labels` (BYTES [n, k]) and
`scores` (FP32 [n, k]).

A hook class (`ferry serve --hook module:Class`, like Paddle Serving's WebService) may add its own
`preprocess(inputs) -> inputs` and `postprocess(inputs, outputs) -> outputs`, both on numpy dicts.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ferry.errors import ConfigError, InputError
from ferry.package import ModelPackage
from ferry.processing import postprocess, preprocess_images
from ferry.processing.image import MAX_PIXELS

EXTRA_OUTPUTS = ("labels", "scores")


def wants_decoding(package: ModelPackage, inputs: dict[str, np.ndarray]) -> bool:
    if not package.manifest.preprocessing or len(package.signature.inputs) != 1:
        return False
    spec = package.signature.inputs[0]
    value = inputs.get(spec.name)
    return value is not None and value.dtype == object and spec.dtype != "string"


_pool: ThreadPoolExecutor | None = None


def decode_pool() -> ThreadPoolExecutor:
    """Images are decoded in one bounded pool per process, one thread per core: a burst of large images
    waits its turn there instead of taking every core from the engines and the event loop."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="ferry-decode")
    return _pool


def decode_images(
    package: ModelPackage, inputs: dict[str, np.ndarray], max_pixels: int | None = MAX_PIXELS
) -> dict[str, np.ndarray]:
    spec = package.signature.inputs[0]
    raw = inputs[spec.name].reshape(-1)
    # Plain JSON strings are not images; as UTF-8 bytes they fail to decode with a 400, as they should.
    images = [x if isinstance(x, bytes) else str(x).encode("utf-8", "surrogatepass") for x in raw]
    try:
        return {spec.name: preprocess_images(images, package.manifest.preprocessing, max_pixels)}
    except InputError as exc:
        raise InputError(f"model {package.name!r}, input {spec.name!r}: {exc}") from None


def has_topk(package: ModelPackage) -> bool:
    return any(step.get("op") == "topk" for step in package.manifest.postprocessing)


def label_outputs(package: ModelPackage, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's outputs plus `labels` and `scores` from its declared postprocessing."""
    first = package.signature.outputs[0].name
    top = postprocess(outputs[first], package.manifest.postprocessing, package.manifest.labels)
    labels = np.array([[item["label"].encode() for item in row] for row in top], dtype=object)
    scores = np.array([[item["score"] for item in row] for row in top], dtype=np.float32)
    return {**outputs, "labels": labels, "scores": scores}


def load_hook(spec: str) -> Any:
    """`module:Class` or `path/to/file.py:Class` -> an instance."""
    target, _, cls_name = spec.rpartition(":")
    if not target or not cls_name:
        raise ConfigError(f"--hook {spec!r}: expected module:Class or file.py:Class")
    try:
        if target.endswith(".py"):
            path = Path(target).resolve()
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            if module_spec is None or module_spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[path.stem] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        hook = getattr(module, cls_name)()
    except Exception as exc:
        raise ConfigError(f"--hook {spec!r}: {exc.__class__.__name__}: {exc}") from None
    if not (hasattr(hook, "preprocess") or hasattr(hook, "postprocess")):
        raise ConfigError(f"--hook {spec!r}: the class defines neither preprocess nor postprocess")
    return hook
