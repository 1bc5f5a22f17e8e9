"""`ferry.Config`: what to run and how, in the shape of Paddle Inference's Config."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ferry.errors import ConfigError
from ferry.package import ModelPackage, load
from ferry.package.constants import MAX_CONSTANT_BYTES

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class TensorRTOptions:
    precision: str = "fp32"
    cache_dir: str | None = None
    min_subgraph_size: int = 3
    workspace_mb: int = 1024


class Config:
    """Options for one predictor. Setters validate at once and say what is allowed."""

    def __init__(self, model: str | os.PathLike[str] | ModelPackage, max_constant_mb: float | None = None):
        """`max_constant_mb` bounds the tensors the graph computes from constants alone (default 256 MiB;
        see `ferry/package/constants.py`); a package object passed in was checked when it was loaded."""
        if isinstance(model, ModelPackage):
            self.package: ModelPackage = model
        else:
            limit = MAX_CONSTANT_BYTES if max_constant_mb is None else int(max_constant_mb * (1 << 20))
            self.package = load(model, max_constant_bytes=limit)
        self.backend = "auto"
        self.cpu_threads: int | None = None
        self.ir_optim = True
        self.transformer_fusion = True
        self.memory_optim = True
        self.profile = False
        # A package made by `ferry convert-precision --to bf16` asks to run at bf16 (on OpenVINO) by default.
        self.precision = self.package.manifest.compression.get("run_precision", "fp32")
        self.device = "cpu"
        self.device_id = 0
        self.tensorrt: TensorRTOptions | None = None
        self.spinning = True

    @property
    def model_dir(self) -> Path | None:
        return self.package.root

    def set_backend(self, name: str) -> None:
        from ferry.inference.backends import BACKEND_NAMES

        if name not in BACKEND_NAMES:
            raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
        self.backend = name

    def set_cpu_threads(self, n: int) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"set_cpu_threads expects a positive int, got {n!r}")
        self.cpu_threads = n

    # Paddle's spelling, so its users' code keeps working.
    set_cpu_math_library_num_threads = set_cpu_threads

    def switch_ir_optim(self, on: bool = True) -> None:
        self.ir_optim = bool(on)

    def switch_transformer_fusion(self, on: bool = True) -> None:
        """ONNX Runtime's transformer fusions (one Attention op per block), made once and recorded in the
        package when the graph fuses; on by default, with ir_optim. See `ferry/exporters/ort_fusion.py`."""
        self.transformer_fusion = bool(on)

    def enable_memory_optim(self, on: bool = True) -> None:
        self.memory_optim = bool(on)

    def set_spinning(self, on: bool) -> None:
        """Whether idle engine threads spin waiting for work (lowest latency alone) or sleep (kinder to a
        server's other threads and processes). Servers turn it off."""
        self.spinning = bool(on)

    def enable_profile(self) -> None:
        self.profile = True

    def set_precision(self, precision: str) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        self.precision = precision

    def enable_gpu(self, device_id: int = 0) -> None:
        self.device, self.device_id = "cuda", int(device_id)

    enable_use_gpu = enable_gpu

    def disable_gpu(self) -> None:
        self.device, self.tensorrt = "cpu", None

    def enable_tensorrt(
        self,
        precision: str = "fp32",
        cache_dir: str | os.PathLike[str] | None = None,
        min_subgraph_size: int = 3,
        workspace_mb: int = 1024,
    ) -> None:
        if precision not in ("fp32", "fp16", "int8"):
            raise ConfigError(f"TensorRT precision must be fp32, fp16 or int8, got {precision!r}")
        self.device = "cuda"
        self.tensorrt = TensorRTOptions(
            precision, str(cache_dir) if cache_dir else None, int(min_subgraph_size), int(workspace_mb)
        )

    def use_gpu(self) -> bool:
        return self.device == "cuda"

    def summary(self) -> str:
        rows = [
            ("model", str(self.package.model_path)),
            ("name", f"{self.package.name} (version {self.package.manifest.version})"),
            ("opset", str(self.package.opset)),
            ("backend", self.backend),
            ("device", self.device if self.device == "cpu" else f"{self.device}:{self.device_id}"),
            ("tensorrt", "off" if self.tensorrt is None else f"on ({self.tensorrt.precision})"),
            ("precision", self.precision),
            ("cpu threads", "engine default" if self.cpu_threads is None else str(self.cpu_threads)),
            ("ir optim", "on" if self.ir_optim else "off"),
            ("ort fusion", "on" if self.ir_optim and self.transformer_fusion else "off"),
            ("memory optim", "on" if self.memory_optim else "off"),
            ("spinning", "on" if self.spinning else "off"),
            ("profile", "on" if self.profile else "off"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)} | {v}" for k, v in rows)

    def __repr__(self) -> str:
        return f"Config({str(self.package.root or self.package.model_path)!r}, backend={self.backend!r})"


def make_config(
    package: str | os.PathLike[str] | ModelPackage,
    backend: str = "auto",
    threads: int | None = None,
    precision: str = "fp32",
) -> Config:
    """A Config with the options every front end takes (CLI, KServe, Ray, benchmarks); threads None leaves
    the engine's default."""
    config = Config(package)
    config.set_backend(backend)
    config.set_precision(precision)
    if threads is not None:
        config.set_cpu_threads(threads)
    return config
