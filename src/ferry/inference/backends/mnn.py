"""MNN, Alibaba's engine for phones and boards, on CPU: `Config.set_backend("mnn")`, `pip install 'ferry[mnn]'`.

The package's ONNX graph is converted once with MNN's converter (see `ferry/exporters/mnn.py`) and
recorded in the package. MNN's Module API resizes to each call's shapes, so any batch runs in one call.
A Module is not safe to run from two threads: each session holds one and a lock, and `clone()` makes
another Module over the same file for a second predictor. Per-op times come from MNN's Interpreter API,
which reports each op as it runs. Precision: fp32 is MNN's "high", fp16 its "low" (fp16 arithmetic where
the CPU has it; this machine's has not, and MNN then computes in fp32).
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferry.errors import BackendError, BackendUnavailableError, ConfigError, ConversionError, UnsupportedModelError
from ferry.inference.backends.base import OpTime, aggregate

if TYPE_CHECKING:
    from ferry.exporters.device import EngineModel
    from ferry.inference.config import Config

_PRECISION = {"fp32": "high", "fp16": "low"}


# MNN's Interpreter::HintMode WINOGRAD_MEMORY_LEVEL; at 0 its CPU backend builds no Winograd convolutions
# (ConvolutionFloatFactory), whose arithmetic was 1.6e-3 off ONNX Runtime on a random-weight ResNet-18.
WINOGRAD_MEMORY_LEVEL = 3


class MnnSession:
    backend = "mnn"

    def __init__(
        self,
        path: Path,
        model: EngineModel,
        settings: dict[str, Any],
        profiling: bool,
        dtypes: dict[str, str],
        winograd: bool = True,
    ):
        import MNN.nn as nn

        self._path, self._model, self._settings, self._profiling = path, model, settings, profiling
        self._dtypes = dtypes  # the package's output dtypes: MNN's int32 goes back to int64 where declared
        self._winograd = winograd
        runtime = nn.create_runtime_manager((settings,))
        if not winograd:  # float convolutions computed directly: fp32 parity, about 13% slower on ResNet-18
            runtime.set_hint(WINOGRAD_MEMORY_LEVEL, 0)
        inputs, outputs = list(model.inputs.values()), list(model.outputs.values())
        self._module = nn.load_module_from_file(str(path), inputs, outputs, runtime_manager=runtime)
        self._lock = threading.Lock()
        self._samples: list[tuple[str, float]] = []

    def run(self, feeds: dict[str, Any], output_names: list[str]) -> list[np.ndarray]:
        import MNN.expr as F

        if self._profiling:
            return self._run_profiled(feeds, output_names)
        try:
            args = [_const(F, _mnn_array(feeds[n])) for n in self._model.inputs]
            with self._lock:
                outs = self._module.forward(args)
                values = dict(zip(self._model.outputs, (np.array(o.read()) for o in outs)))
            values = {
                n: v.astype(self._dtypes[n], copy=False) if v.dtype.kind in "iu" else v for n, v in values.items()
            }
        except Exception as exc:
            raise BackendError(f"mnn failed: {exc}") from exc
        return [values[n] for n in output_names]

    def _run_profiled(self, feeds: dict[str, Any], output_names: list[str]) -> list[np.ndarray]:
        """The Interpreter API runs the same file and calls back before and after every op."""
        import MNN

        interpreter = MNN.Interpreter(str(self._path))
        session = interpreter.createSession({"numThread": self._settings["numThread"]})
        for name, value in feeds.items():
            tensor = interpreter.getSessionInput(session, self._model.inputs[name])
            interpreter.resizeTensor(tensor, tuple(value.shape))
        interpreter.resizeSession(session)
        for name, value in feeds.items():
            tensor = interpreter.getSessionInput(session, self._model.inputs[name])
            host = MNN.Tensor(
                tuple(value.shape), tensor.getDataType(), _mnn_array(value), MNN.Tensor_DimensionType_Caffe
            )
            tensor.copyFrom(host)
        started: dict[str, float] = {}

        def before(tensors: Any, info: Any) -> bool:
            started[info.getName()] = time.perf_counter()
            return True

        def after(tensors: Any, info: Any) -> bool:
            self._samples.append((info.getType(), (time.perf_counter() - started[info.getName()]) * 1e3))
            return True

        interpreter.runSessionWithCallBackInfo(session, before, after)
        out = []
        for name in output_names:
            tensor = interpreter.getSessionOutput(session, self._model.outputs[name])
            out.append(_declared(np.array(tensor.getNumpyData()).copy(), self._dtypes[name]))
        return out

    def share(self, array: np.ndarray) -> Any:
        return array

    def clone(self) -> MnnSession:
        return MnnSession(self._path, self._model, self._settings, self._profiling, self._dtypes, self._winograd)

    def profile(self) -> list[OpTime]:
        if not self._profiling:
            raise ConfigError("profiling is off: call config.enable_profile() before create_predictor")
        return aggregate(self._samples)

    def describe(self) -> str:
        threads, precision = self._settings["numThread"], self._settings["precision"]
        return f"mnn {importlib.metadata.version('MNN')} (CPU, {threads} threads, {precision} precision)"


def _const(F: Any, value: np.ndarray) -> Any:  # noqa: N803 (MNN's own name for its expr module)
    """An MNN constant; its dtype is given, else F.const takes only float32."""
    kinds = {"float32": F.float, "int32": F.int, "uint8": F.uint8}
    if value.dtype.name not in kinds:
        raise BackendError(f"MNN takes float32, int32 (int64 when it fits) or uint8 inputs, got {value.dtype}")
    return F.const(value, list(value.shape), F.NCHW, kinds[value.dtype.name])


def _declared(value: np.ndarray, dtype: str) -> np.ndarray:
    return value.astype(dtype, copy=False) if value.dtype.kind in "iu" else value


def _mnn_array(value: np.ndarray) -> np.ndarray:
    """MNN has no 64-bit integers (its converter makes the graph's int64 int32): token ids go in as int32,
    when they fit."""
    if value.dtype == np.int64:
        if value.size and (value.max() > np.iinfo(np.int32).max or value.min() < np.iinfo(np.int32).min):
            raise BackendError("MNN computes integers in int32; an int64 input holds values beyond its range")
        return np.ascontiguousarray(value, dtype=np.int32)
    return np.ascontiguousarray(value)


class MnnBackend:
    name = "mnn"

    def available(self) -> bool:
        import importlib.util

        return importlib.util.find_spec("MNN") is not None

    def max_opset(self) -> int:
        import onnx

        return onnx.defs.onnx_opset_version()

    def create(self, config: Config) -> MnnSession:
        from ferry.exporters.engine_files import engine_files

        if config.device != "cpu":
            raise BackendUnavailableError("ferry's mnn backend runs on CPU")
        if config.precision not in _PRECISION:
            raise ConfigError(f"MNN computes in fp32 or fp16, not {config.precision}")
        package = config.package
        try:
            folder, model = engine_files(package, "mnn")
        except ConversionError as exc:
            raise UnsupportedModelError(f"{package.model_path}: {exc}") from None
        settings = {
            "backend": "CPU",
            "numThread": config.cpu_threads or os.cpu_count() or 1,
            "precision": _PRECISION[config.precision],
        }
        try:
            dtypes = {s.name: s.dtype for s in package.signature.outputs}
            return MnnSession(folder / model.files[0], model, settings, config.profile, dtypes)
        except Exception as exc:
            raise BackendError(f"{folder}: MNN could not load the model: {exc}") from exc


BACKEND = MnnBackend()
