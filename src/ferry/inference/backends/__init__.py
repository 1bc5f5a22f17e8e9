"""Backends, found by name and imported only when first asked for.

Each module here exposes one backend object; `get_backend` imports it on first use so that OpenVINO,
for example, stays an optional install.
"""

from __future__ import annotations

import importlib
from functools import cache

from ferry.errors import BackendUnavailableError, ConfigError
from ferry.inference.backends.base import Backend, OpTime, Session

_MODULES = {
    "onnxruntime": ("ferry.inference.backends.onnxruntime", "onnxruntime"),
    "openvino": ("ferry.inference.backends.openvino", "openvino"),
    "lite": ("ferry.inference.backends.lite", "ferry"),
    "ncnn": ("ferry.inference.backends.ncnn", "'ferry[ncnn]'"),
    "mnn": ("ferry.inference.backends.mnn", "'ferry[mnn]'"),
}
ENGINE_NAMES = ("onnxruntime", "openvino", "ncnn", "mnn")  # what `auto` and `ferry bench --tune` choose between
BACKEND_NAMES = ("auto", *_MODULES)


@cache
def get_backend(name: str) -> Backend:
    if name not in _MODULES:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    module_name, pip_name = _MODULES[name]
    backend = importlib.import_module(module_name).BACKEND
    if not backend.available():
        raise BackendUnavailableError(f"backend {name!r} is not installed: pip install {pip_name}")
    return backend


def installed_backends() -> list[str]:
    found = []
    for name in ENGINE_NAMES:
        try:
            get_backend(name)
        except BackendUnavailableError:
            continue
        found.append(name)
    return found


__all__ = ["BACKEND_NAMES", "ENGINE_NAMES", "Backend", "OpTime", "Session", "get_backend", "installed_backends"]
