"""ncnn, Tencent's engine for phones and boards, on CPU: `Config.set_backend("ncnn")`, `pip install 'ferry[ncnn]'`.

The package's ONNX graph is converted once with pnnx (see `ferry/exporters/ncnn.py`) and recorded in the
package. pnnx converts at fixed input shapes: a package with named dimensions past the batch axis (an
image's height and width, a sequence) is converted at the first call's shapes, and later calls must come
at those shapes (`ferry export lite --target ncnn --shape` converts for others). ncnn has no batch axis: a
batch runs one sample at a time through one Net (extractors are cheap and a Net may serve several at once).
Its Python binding has no per-layer timing, so `profile()` says so.
Precision: fp32 turns ncnn's fp16/bf16 storage off (its default on CPUs that have them); fp16 and bf16
turn it on.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferry.errors import BackendError, BackendUnavailableError, ConfigError, ConversionError, UnsupportedModelError
from ferry.inference.backends.base import OpTime

log = logging.getLogger("ferry")

if TYPE_CHECKING:
    from ferry.exporters.device import EngineModel
    from ferry.inference.config import Config


class NcnnSession:
    backend = "ncnn"

    def __init__(self, net: Any, model: EngineModel, out_shapes: dict[str, tuple[Any, ...]], describe: str):
        self._net = net
        self._model = model
        self._out_shapes = out_shapes  # per-sample shapes of each output (the package's, batch axis off)
        self._describe = describe

    @property
    def shapes(self) -> dict[str, list[int]]:
        """The input shapes it was converted at."""
        return self._model.shapes

    def run(self, feeds: dict[str, Any], output_names: list[str]) -> list[np.ndarray]:
        import ncnn

        batch = len(next(iter(feeds.values())))
        per_output: dict[str, list[np.ndarray]] = {n: [] for n in output_names}
        try:
            for i in range(batch):
                ex = self._net.create_extractor()
                for name, value in feeds.items():
                    sample = np.ascontiguousarray(value[i], dtype=np.float32 if value.dtype.kind == "f" else np.int32)
                    ex.input(self._model.inputs[name], ncnn.Mat(sample))
                for name in output_names:
                    status, mat = ex.extract(self._model.outputs[name])
                    if status != 0:
                        raise BackendError(f"ncnn could not compute {name!r} (status {status})")
                    per_output[name].append(_shaped(np.array(mat), self._out_shapes[name]))
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"ncnn failed: {exc}") from exc
        return [np.stack(per_output[n]) for n in output_names]

    def share(self, array: np.ndarray) -> Any:
        return array

    def clone(self) -> NcnnSession:
        return self  # one Net serves many extractors at once

    def profile(self) -> list[OpTime]:
        raise ConfigError("ncnn's Python binding has no per-layer timing (ncnn's C++ build with NCNN_BENCHMARK does)")

    def describe(self) -> str:
        return self._describe


class DeferredNcnnSession:
    """For a package with named dimensions past the batch axis: converts at the first call's shapes, and
    again (replacing the record, with a warning) when a call comes at other shapes: a bench run at made-up
    sizes must not pin the package to them."""

    backend = "ncnn"

    def __init__(self, config: Config):
        self._config = config
        self._session: NcnnSession | None = None
        self._lock = threading.Lock()

    def run(self, feeds: dict[str, Any], output_names: list[str]) -> list[np.ndarray]:
        shapes = {name: [1, *np.shape(value)[1:]] for name, value in feeds.items()}
        with self._lock:
            if self._session is None or self._session.shapes != shapes:
                if self._session is not None:
                    log.warning("ncnn: converting %r again for the shapes %s (it was converted at %s)",
                                self._config.package.name, shapes, self._session.shapes)  # fmt: skip
                self._session = _open(self._config, shapes=shapes)
            session = self._session
        return session.run(feeds, output_names)

    def share(self, array: np.ndarray) -> Any:
        return array

    def clone(self) -> DeferredNcnnSession:
        return self

    def profile(self) -> list[OpTime]:
        raise ConfigError("ncnn's Python binding has no per-layer timing (ncnn's C++ build with NCNN_BENCHMARK does)")

    def describe(self) -> str:
        return self._session.describe() if self._session else "ncnn (converted at the first call's shapes)"


def _shaped(array: np.ndarray, shape: tuple[Any, ...]) -> np.ndarray:
    """ncnn drops leading 1-sized axes from a sample; give back the package's shape where it is fixed."""
    if all(isinstance(d, int) for d in shape) and int(np.prod(shape)) == array.size:
        return array.reshape(shape)
    return array


class NcnnBackend:
    name = "ncnn"

    def available(self) -> bool:
        import importlib.util

        return importlib.util.find_spec("ncnn") is not None and importlib.util.find_spec("pnnx") is not None

    def max_opset(self) -> int:
        import onnx

        return onnx.defs.onnx_opset_version()  # pnnx reads what the installed onnx reads

    def create(self, config: Config) -> NcnnSession | DeferredNcnnSession:
        if config.device != "cpu":
            raise BackendUnavailableError("ferry's ncnn backend runs on CPU (ncnn's Vulkan build is not in its wheel)")
        package = config.package
        return DeferredNcnnSession(config) if package.signature.named_inner_dims else _open(config)


def _open(config: Config, **options: Any) -> NcnnSession:
    from ferry.exporters.engine_files import engine_files

    package = config.package
    try:
        folder, model = engine_files(package, "ncnn", **options)
    except ConversionError as exc:
        raise UnsupportedModelError(f"{package.model_path}: {exc}") from None
    shapes = {s.name: tuple(s.shape[1:]) for s in package.signature.outputs}
    return open_session(folder, model, shapes, config.cpu_threads, config.precision)


def open_session(
    folder: Path, model: EngineModel, out_shapes: dict[str, tuple[Any, ...]], threads: int | None, precision: str
) -> NcnnSession:
    """A session over the files in `folder` alone (what a device app loads), as `model` records them."""
    import ncnn

    net = ncnn.Net()
    half = precision != "fp32"
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = precision == "fp16"
    net.opt.use_bf16_storage = precision == "bf16"
    if threads:
        net.opt.num_threads = threads  # else ncnn's default: the big cores
    if net.load_param(str(folder / model.files[0])) != 0 or net.load_model(str(folder / model.files[1])) != 0:
        raise BackendError(f"{folder}: ncnn could not load {model.files}")
    version = importlib.metadata.version("ncnn")
    describe = f"ncnn {version} (CPU, {net.opt.num_threads} threads, {'fp16/bf16 storage' if half else 'fp32'})"
    return NcnnSession(net, model, out_shapes, describe)


BACKEND = NcnnBackend()
