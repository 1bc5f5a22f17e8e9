"""What every backend provides. A backend turns a validated package plus a Config into a Session."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from ferry.inference.config import Config


@dataclass(frozen=True)
class OpTime:
    """Time spent in one kind of op over all profiled runs."""

    op_type: str
    calls: int
    total_ms: float


class Session(Protocol):
    """A loaded model ready to run. `run` may be called from several threads at once."""

    backend: str

    def run(self, feeds: dict[str, Any], output_names: list[str]) -> list[np.ndarray]: ...

    def share(self, array: np.ndarray) -> Any:
        """Wrap `array` for `run` without copying it."""
        ...

    def clone(self) -> Session:
        """A session for another predictor that shares this one's weights."""
        ...

    def profile(self) -> list[OpTime]: ...

    def describe(self) -> str: ...


class Backend(Protocol):
    name: str

    def available(self) -> bool: ...

    def max_opset(self) -> int: ...

    def create(self, config: Config) -> Session: ...


def aggregate(rows: list[tuple[str, float]]) -> list[OpTime]:
    """(op_type, ms) samples -> one OpTime per op type, slowest first."""
    totals: dict[str, list[float]] = {}
    for op, ms in rows:
        entry = totals.setdefault(op, [0, 0.0])
        entry[0] += 1
        entry[1] += ms
    return sorted((OpTime(op, int(n), t) for op, (n, t) in totals.items()), key=lambda r: -r.total_ms)


class EngineBackend(abc.ABC):
    """What the engine modules share: found by import name, and an opset limit learned by probing."""

    name = ""
    module = ""  # the engine's import name

    def available(self) -> bool:
        import importlib.util

        return importlib.util.find_spec(self.module) is not None

    @abc.abstractmethod
    def accepts(self, model: bytes) -> bool:
        """Whether the engine loads this serialized model."""

    def max_opset(self) -> int:
        if not hasattr(self, "_max_opset"):
            self._max_opset = probe_max_opset(self.accepts)
        return self._max_opset


def probe_max_opset(accepts: Callable[[bytes], bool]) -> int:
    """Highest default-domain opset for which `accepts(model_bytes)` is True (tries newest first).

    The search starts a few opsets above the installed onnx's own: an engine may run opsets that onnx's
    Python package does not know yet (onnxruntime 1.32 ran 28 when onnx knew 28).
    """
    import onnx
    from onnx import helper

    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    for version in range(onnx.defs.onnx_opset_version() + 4, 6, -1):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", version)], ir_version=8)
        if accepts(model.SerializeToString()):
            return version
    return 0
