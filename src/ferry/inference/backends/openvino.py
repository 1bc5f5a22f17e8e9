"""OpenVINO on CPU: the second engine, and the one that runs bf16/fp16 here.

OpenVINO picks bf16 by itself on CPUs with AVX512_BF16 unless told otherwise, so the precision hint is
always set: fp32 means f32.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from ferry.errors import BackendError, BackendUnavailableError, ConfigError, UnsupportedModelError
from ferry.inference.backends.base import EngineBackend, OpTime, aggregate

if TYPE_CHECKING:
    from ferry.inference.config import Config

_PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


class OvSession:
    backend = "openvino"

    def __init__(self, compiled: Any, precision: str, profiling: bool):
        self._compiled = compiled
        self._precision = precision
        self._profiling = profiling
        self._local = threading.local()
        self._requests: list[Any] = []  # every request made, for the profile
        self._lock = threading.Lock()
        self._ports = {}
        for port in compiled.outputs:
            for name in port.get_names():
                self._ports[name] = port

    def _request(self) -> Any:
        # An InferRequest is not thread-safe; each thread gets its own, all sharing the compiled weights.
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._compiled.create_infer_request()
            self._local.request = req
            with self._lock:
                self._requests.append(req)
        return req

    def run(self, feeds: dict[str, Any], output_names: list[str]) -> list[np.ndarray]:
        req = self._request()
        try:
            results = req.infer(feeds, share_inputs=True, share_outputs=False)
            return [np.asarray(results[self._ports[name]]) for name in output_names]
        except Exception as exc:
            raise BackendError(f"openvino failed: {exc}") from exc

    def share(self, array: np.ndarray) -> Any:
        return array  # infer(share_inputs=True) already reads numpy memory in place

    def clone(self) -> OvSession:
        return OvSession(self._compiled, self._precision, self._profiling)

    def profile(self) -> list[OpTime]:
        if not self._profiling:
            raise ConfigError("profiling is off: call config.enable_profile() before create_predictor")
        rows = []
        with self._lock:
            for req in self._requests:
                for info in req.profiling_info:
                    if info.status == info.Status.EXECUTED:
                        rows.append((info.node_type, info.real_time.total_seconds() * 1000.0))
        return aggregate(rows)

    def describe(self) -> str:
        import openvino as ov

        return f"openvino {ov.__version__} (CPU, {_PRECISION_HINT[self._precision]})"


@cache
def _core() -> Any:
    import openvino as ov

    return ov.Core()


class OvBackend(EngineBackend):
    name = "openvino"
    module = "openvino"

    def accepts(self, model: bytes) -> bool:
        try:
            _core().read_model(model=model, weights=b"")
        except Exception:
            return False
        return True

    def create(self, config: Config) -> OvSession:
        if config.device != "cpu":
            raise BackendUnavailableError(
                "ferry's openvino backend runs on CPU; use backend 'onnxruntime' with enable_gpu()"
            )
        package = config.package
        if package.opset > self.max_opset():
            raise UnsupportedModelError(
                f"{package.model_path}: opset {package.opset} is newer than openvino's ONNX reader accepts "
                f"(up to {self.max_opset()})"
            )
        settings: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": _PRECISION_HINT[config.precision],
            "PERFORMANCE_HINT": "LATENCY",
        }
        if config.cpu_threads is not None:
            settings["INFERENCE_NUM_THREADS"] = config.cpu_threads
        if config.profile:
            settings["PERF_COUNT"] = True
        try:
            model = _core().read_model(str(package.model_path))
            compiled = _core().compile_model(model, "CPU", settings)
        except Exception as exc:
            raise BackendError(f"{package.model_path}: openvino could not load the model: {exc}") from exc
        return OvSession(compiled, config.precision, config.profile)


BACKEND = OvBackend()
