"""ONNX -> MNN (`model.mnn`) through MNN's converter, from MNN's own wheel.

MNN's `mnnconvert` script imports a logger that runs `pip install aliyun-log-python-sdk` when that is
missing and sends the machine's id to Alibaba's log service after each conversion (MNN 3.6.1,
`MNN/tools/utils/log.py`); ferry calls the converter's native entry point (`_tools.mnnconvert`, what the
script calls) in a child process instead: `mnnconvert_command` is that one reach past MNN's public API.
MNN keeps the graph's input and output names and its dynamic dimensions: its backend resizes per call.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

from ferry.errors import ConversionError
from ferry.exporters.device import EngineModel
from ferry.package import ModelPackage

MODEL = "model.mnn"
INSTALL = "the mnn target needs MNN: pip install 'ferry[mnn]'"


def mnnconvert_command(args: list[str]) -> list[str]:
    """The command that runs MNN's converter with `args`, without its Python wrapper (see above)."""
    if importlib.util.find_spec("_tools") is None or importlib.util.find_spec("MNN") is None:
        raise ConversionError(INSTALL)
    return [sys.executable, "-c", "import sys, _tools; _tools.mnnconvert(sys.argv)", *args]


def convert(package: ModelPackage, out: Path, *, fp16: bool = False, int8_weights: bool = False) -> EngineModel:
    """Write MODEL into `out`; `fp16` stores float weights in half, `int8_weights` as int8 (dequantized at
    load: smaller files, float compute)."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / MODEL
    target.unlink(missing_ok=True)
    args = ["-f", "ONNX", "--modelFile", str(package.model_path), "--MNNModel", str(target), "--bizCode", "ferry"]
    if fp16:
        args.append("--fp16")
    if int8_weights:
        args += ["--weightQuantBits", "8"]
    done = subprocess.run(mnnconvert_command(args), capture_output=True, text=True)
    text = done.stdout + done.stderr
    if done.returncode != 0 or not target.is_file() or "Converted Success" not in text:
        raise ConversionError(f"MNN's converter could not convert {package.name!r}: {_reason(text)}")
    return EngineModel(
        engine="mnn",
        files=[MODEL],
        inputs={n: n for n in package.signature.input_names},
        outputs={n: n for n in package.signature.output_names},
        converter=f"MNNConvert {importlib.metadata.version('MNN')}",
        options={"fp16": fp16, "int8_weights": int8_weights},
    )


def _reason(text: str) -> str:
    """MNN's lines that say what failed (it prints unsupported ops as `... not support ...`)."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and "device supports" not in line]
    picked = [line for line in lines if "not support" in line.lower() or "error" in line.lower()]
    return " / ".join((picked or lines)[-4:]) or "no message"
