"""ONNX -> MNN (`model.mnn`) through MNN's converter, from MNN's own wheel.

MNN's `mnnconvert` script imports a logger that runs `pip install aliyun-log-python-sdk` when that is
missing and sends the machine's id to Alibaba's log service after each conversion (MNN 3.6.1,
`MNN/tools/utils/log.py`); ferry calls the converter's native entry point (`_tools.mnnconvert`, what the
script calls) in a child process instead, and its quantizer (`_tools.mnnquant`) the same way:
`tool_command` is that one reach past MNN's public API. MNN keeps the graph's input and output names and
its dynamic dimensions: its backend resizes per call.

int8 from calibration data goes through MNN's own quantizer, which reads samples as a folder of
"sequence" samples (a folder each: `input.json` with the shapes, `<input>.txt` with the values) and
calibrates activations by EMA: its KL method crashes (SIGSEGV) on sequence samples in MNN 3.6.1, and MNN
itself switches to EMA for models with batch norm.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ferry.errors import ConversionError
from ferry.exporters.device import EngineModel
from ferry.package import ModelPackage

MODEL = "model.mnn"
INSTALL = "the mnn target needs MNN: pip install 'ferry[mnn]'"


def tool_command(tool: str, args: list[str]) -> list[str]:
    """The command that runs MNN's `mnnconvert` or `mnnquant` with `args`, without its Python wrapper."""
    if importlib.util.find_spec("_tools") is None or importlib.util.find_spec("MNN") is None:
        raise ConversionError(INSTALL)
    return [sys.executable, "-c", f"import sys, _tools; _tools.{tool}(sys.argv)", *args]


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
    done = subprocess.run(tool_command("mnnconvert", args), capture_output=True, text=True)
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


def quantize(model: Path, samples: list[dict[str, np.ndarray]]) -> None:
    """Replace the float `model` by MNN's int8 one (weights and activations), calibrated on `samples`
    (one dict of arrays each, a batch axis of 1, named as the model's inputs)."""
    with tempfile.TemporaryDirectory(prefix="ferry-mnnquant-") as tmp:
        folder = Path(tmp) / "samples"
        for i, sample in enumerate(samples):
            where = folder / f"{i:06d}"
            where.mkdir(parents=True)
            shapes = [{"name": name, "shape": list(value.shape)} for name, value in sample.items()]
            (where / "input.json").write_text(json.dumps({"inputs": shapes}))
            for name, value in sample.items():
                np.savetxt(where / f"{name}.txt", value.reshape(-1).astype(np.float64), fmt="%.9g")
        config = {"path": str(folder), "used_sample_num": len(samples), "input_type": "sequence",
                  "feature_quantize_method": "EMA", "weight_quantize_method": "MAX_ABS"}  # fmt: skip
        (Path(tmp) / "config.json").write_text(json.dumps(config))
        target = Path(tmp) / MODEL
        done = subprocess.run(tool_command("mnnquant", [str(model), str(target), str(Path(tmp) / "config.json")]),
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0 or not target.is_file():
            why = f"it crashed ({-done.returncode})" if done.returncode < 0 else _reason(done.stdout + done.stderr)
            raise ConversionError(f"MNN's quantizer could not quantize {model.name}: {why}")
        shutil.move(target, model)


def _reason(text: str) -> str:
    """MNN's lines that say what failed (it prints unsupported ops as `... not support ...`)."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and "device supports" not in line]
    picked = [line for line in lines if "not support" in line.lower() or "error" in line.lower()]
    return " / ".join((picked or lines)[-4:]) or "no message"
