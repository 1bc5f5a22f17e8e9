"""ferry's own numpy engine as a backend: `Config.set_backend("lite")`. Slower than the big engines on
servers; here so that a model can be checked on the lite engine from the same API before it ships."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ferry.errors import BackendError, BackendUnavailableError, ConfigError, UnsupportedModelError
from ferry.inference.backends.base import OpTime, aggregate

if TYPE_CHECKING:
    from ferry.inference.config import Config


class LiteSession:
    backend = "lite"

    def __init__(self, engine: Any, profiling: bool):
        self._engine = engine
        self._profiling = profiling
        self._samples: list[tuple[str, float]] = []

    def run(self, feeds: dict[str, Any], output_names: list[str]) -> list[np.ndarray]:
        from ferry.lite import LiteError

        try:
            if self._profiling:
                return self._run_profiled(feeds, output_names)
            out = self._engine.run(feeds, output_names)
        except LiteError as exc:
            raise BackendError(f"lite engine failed: {exc}") from exc
        return [out[n] for n in output_names]

    def _run_profiled(self, feeds: dict[str, Any], output_names: list[str]) -> list[np.ndarray]:
        program = self._engine.program
        env = dict(self._engine.graph.weights)
        env.update(feeds)
        for step in program.steps:
            started = time.perf_counter()
            step(env)
            self._samples.append((step.node.op, (time.perf_counter() - started) * 1000.0))
        return [env[n] for n in output_names]

    def share(self, array: np.ndarray) -> Any:
        return array

    def clone(self) -> LiteSession:
        from ferry.lite import Engine

        # A clone shares the weights; each engine keeps its own arena, so clones may run in parallel.
        return LiteSession(Engine(self._engine.graph, self._engine.memory), self._profiling)

    def profile(self) -> list[OpTime]:
        if not self._profiling:
            raise ConfigError("profiling is off: call config.enable_profile() before create_predictor")
        return aggregate(self._samples)

    def describe(self) -> str:
        return "ferry lite (numpy)"


class LiteBackend:
    name = "lite"

    def available(self) -> bool:
        return True

    def max_opset(self) -> int:
        import onnx

        return onnx.defs.onnx_opset_version()

    def create(self, config: Config) -> LiteSession:
        from ferry.exporters.onnx_to_lite import from_onnx
        from ferry.lite import Engine, UnsupportedOpError

        if config.device != "cpu":
            raise BackendUnavailableError("the lite engine runs on CPU only")
        if config.precision != "fp32":
            raise ConfigError(f"the lite engine computes in the model's own types; precision {config.precision!r}")
        package = config.package
        try:
            engine = Engine(from_onnx(package.full_model()))
        except UnsupportedOpError as exc:
            raise UnsupportedModelError(f"{package.model_path}: {exc}") from None
        return LiteSession(engine, config.profile)


BACKEND = LiteBackend()
