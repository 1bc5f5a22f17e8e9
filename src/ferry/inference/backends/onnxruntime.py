"""ONNX Runtime: the default engine. CPU always; CUDA and TensorRT where onnxruntime-gpu is installed."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from ferry.errors import BackendError, BackendUnavailableError, ConfigError, UnsupportedModelError
from ferry.inference.backends.base import EngineBackend, OpTime, aggregate

if TYPE_CHECKING:
    from ferry.inference.config import Config


class OrtSession:
    backend = "onnxruntime"

    def __init__(self, sess: Any, providers: list[str], profiling: bool, fused: dict[str, int] | None = None):
        self._sess = sess
        self._fused = fused or {}
        # InferenceSession.run re-checks input names (ferry already did) and retries failed GPU runs on CPU.
        # On CPU alone there is nothing to retry, so call the bound C++ run directly: 2-3 us less per call.
        cpu_only = providers == ["CPUExecutionProvider"]
        inner = getattr(sess, "_sess", None)
        self._fast_run = inner.run if cpu_only and inner is not None else None
        self._providers = providers
        self._profiling = profiling
        self._profile_lock = threading.Lock()
        self._profile_rows: list[OpTime] | None = None

    def run(self, feeds: dict[str, Any], output_names: list[str]) -> list[np.ndarray]:
        try:
            if self._fast_run is not None:
                return self._fast_run(output_names, feeds, None)
            return self._sess.run(output_names, feeds)
        except Exception as exc:  # ORT raises its own exception types; callers get ours
            raise BackendError(f"onnxruntime failed: {exc}") from exc

    def share(self, array: np.ndarray) -> Any:
        import onnxruntime as ort

        # ortvalue_from_numpy keeps a reference to the array and reads its memory in place.
        return ort.OrtValue.ortvalue_from_numpy(array)

    def clone(self) -> OrtSession:
        # An InferenceSession is safe to run from several threads; clones share it, and with it the weights.
        return self

    def profile(self) -> list[OpTime]:
        if not self._profiling:
            raise ConfigError("profiling is off: call config.enable_profile() before create_predictor")
        with self._profile_lock:
            if self._profile_rows is None:
                path = self._sess.end_profiling()
                with open(path, encoding="utf-8") as f:
                    events = json.load(f)
                os.unlink(path)
                rows = [
                    (e["args"]["op_name"], e["dur"] / 1000.0)
                    for e in events
                    if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
                ]
                self._profile_rows = aggregate(rows)
            return self._profile_rows

    def describe(self) -> str:
        fused = (
            f"; transformer fusions: {', '.join(f'{op} {n}' for op, n in self._fused.items())}" if self._fused else ""
        )
        return f"onnxruntime {_version()} ({', '.join(self._providers)}{fused})"


@cache
def _version() -> str:
    import onnxruntime as ort

    return ort.__version__


class OrtBackend(EngineBackend):
    name = "onnxruntime"
    module = "onnxruntime"

    def accepts(self, model: bytes) -> bool:
        import onnxruntime as ort

        try:
            ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        except Exception:
            return False
        return True

    def create(self, config: Config) -> OrtSession:
        import onnxruntime as ort

        package = config.package
        if package.opset > self.max_opset():
            raise UnsupportedModelError(
                f"{package.model_path}: opset {package.opset} is newer than onnxruntime {ort.__version__} "
                f"supports (up to {self.max_opset()}); re-export with a lower opset or upgrade onnxruntime"
            )
        providers = _providers(config, ort.get_available_providers())
        so = ort.SessionOptions()
        if config.cpu_threads is not None:
            so.intra_op_num_threads = config.cpu_threads
            so.inter_op_num_threads = 1
        so.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL if config.ir_optim else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        )
        so.enable_mem_pattern = config.memory_optim
        so.enable_mem_reuse = config.memory_optim
        so.enable_cpu_mem_arena = config.memory_optim
        so.log_severity_level = 3
        if not config.spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if config.profile:
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(tempfile.gettempdir(), f"ferry-ort-{os.getpid()}")
        path, fused = _model_path(config)
        try:
            sess = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as exc:
            raise BackendError(f"{path}: onnxruntime could not load the model: {exc}") from exc
        return OrtSession(sess, [p if isinstance(p, str) else p[0] for p in providers], config.profile, fused)


def _model_path(config: Config) -> tuple[Any, dict[str, int]]:
    """The package's graph, or ORT's transformer-fused one where it fuses attention (made once, recorded
    in the package; see `ferry/exporters/ort_fusion.py`): (path, what was fused)."""
    package = config.package
    if not (config.ir_optim and config.transformer_fusion and config.device == "cpu" and package.root is not None):
        return package.model_path, {}
    from ferry.errors import ConversionError
    from ferry.exporters.engine_files import engine_files
    from ferry.exporters.ort_fusion import looks_like_transformer

    if "onnxruntime-fused" not in package.manifest.engines and not looks_like_transformer(package):
        return package.model_path, {}
    try:
        folder, model = engine_files(package, "onnxruntime-fused")
    except ConversionError:
        return package.model_path, {}
    return folder / model.files[0], model.options.get("fused", {})


def _providers(config: Config, available: list[str]) -> list[Any]:
    if config.precision != "fp32" and config.tensorrt is None:
        raise ConfigError(
            f"onnxruntime runs this model at fp32 only (asked for {config.precision}); "
            "use config.set_backend('openvino') for bf16/fp16 on CPU, or convert the package's precision"
        )
    if config.device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        raise BackendUnavailableError(
            "GPU asked for, but this onnxruntime has no CUDAExecutionProvider "
            f"(available: {', '.join(available)}); pip uninstall onnxruntime && pip install onnxruntime-gpu"
        )
    cuda = ("CUDAExecutionProvider", {"device_id": config.device_id})
    if config.tensorrt is None:
        return [cuda, "CPUExecutionProvider"]
    if "TensorrtExecutionProvider" not in available:
        raise BackendUnavailableError(
            "TensorRT asked for, but onnxruntime has no TensorrtExecutionProvider; install onnxruntime-gpu "
            "and TensorRT (pip install tensorrt) and make sure libnvinfer is on the library path"
        )
    trt = config.tensorrt
    options: dict[str, Any] = {
        "device_id": config.device_id,
        "trt_min_subgraph_size": trt.min_subgraph_size,
        "trt_max_workspace_size": trt.workspace_mb << 20,
        "trt_fp16_enable": trt.precision == "fp16",
        "trt_int8_enable": trt.precision == "int8",
    }
    if trt.cache_dir:
        options.update(trt_engine_cache_enable=True, trt_engine_cache_path=trt.cache_dir)
    return [("TensorrtExecutionProvider", options), cuda, "CPUExecutionProvider"]


BACKEND = OrtBackend()
