"""ONNX -> ONNX Runtime's mobile format (`model.ort`) and the operator list a reduced-size ORT build takes
(`required_operators.config`, for `build.sh --include_ops_by_config`), with ORT's own converter."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tempfile
from pathlib import Path

from ferry.errors import ConversionError
from ferry.exporters.device import EngineModel
from ferry.package import ModelPackage

MODEL, OPERATORS = "model.ort", "required_operators.config"


def convert(package: ModelPackage, out: Path) -> EngineModel:
    """Write MODEL and OPERATORS into `out` (graph optimizations fixed at conversion, as ORT Mobile runs)."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ferry-ort-") as tmp:
        source = Path(tmp) / "model.onnx"  # the tool converts every .onnx in a folder; give it this one alone
        source.symlink_to(package.model_path.resolve())
        command = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(source),
                   "--output_dir", str(out), "--optimization_style", "Fixed"]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not (out / MODEL).is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-2:]
        raise ConversionError(f"ONNX Runtime could not write {package.name!r} as .ort: {' / '.join(tail)}")
    for extra in out.glob("*.config"):
        if extra.name != OPERATORS:
            extra.replace(out / OPERATORS)
    names = package.signature
    return EngineModel(
        engine="ort",
        files=[MODEL, OPERATORS],
        inputs={n: n for n in names.input_names},
        outputs={n: n for n in names.output_names},
        converter=f"onnxruntime {importlib.metadata.version('onnxruntime')} convert_onnx_models_to_ort",
    )


def operators(config: Path) -> list[str]:
    """`domain;opset;Op1,Op2` lines -> ["ai.onnx:17:Conv", ...]."""
    ops = []
    for line in config.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            domain, opset, names = line.split(";")[:3]
            ops += [f"{domain}:{opset}:{op}" for op in names.split(",") if op]
    return ops
