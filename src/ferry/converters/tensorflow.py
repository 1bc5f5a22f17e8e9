"""TensorFlow models -> package, through tf2onnx: a SavedModel folder, a frozen GraphDef (`.pb`), a `.tflite`.

Two child processes do the TensorFlow work, so TensorFlow never loads into ferry's process: the worker
(`tensorflow_worker.py`) runs the model in TensorFlow for the parity check and reports its signature, and
tf2onnx's own command line converts (`python -m tf2onnx.convert`, its documented interface). Then the
package keeps the signature's names (`x`, not `serving_default_x:0`), and a dynamic axis 0 is `batch`.

Keras files (`.keras`, `.h5`) take the Keras converter instead: no TensorFlow needed there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ferry.converters._common import batch_dim_names, check_package, ferry_version, rename_values, version_of
from ferry.converters.result import Conversion
from ferry.errors import ConversionError
from ferry.package import Provenance, save

# tf2onnx 1.17 writes opsets up to 18; 17 is what every ferry backend (the lite engine included) takes.
DEFAULT_OPSET = 17
UNSUPPORTED = re.compile(r"Tensorflow op \[(.+?): (\w+)\] is not supported")
INSTALL = "converting TensorFlow models needs TensorFlow and tf2onnx: pip install 'ferry[tensorflow]'"


def kind_of(source: str | os.PathLike[str]) -> str | None:
    """'saved_model', 'graphdef' or 'tflite' for a TensorFlow file or folder, None for anything else."""
    p = Path(source)
    if p.is_dir() and (p / "saved_model.pb").is_file():
        return "saved_model"
    if p.suffix == ".pb" and p.is_file():
        return "graphdef"
    if p.suffix == ".tflite":
        return "tflite"
    return None


def convert_tensorflow(
    source: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    signature: str = "serving_default",
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    example_inputs: dict[str, np.ndarray] | np.ndarray | None = None,
    opset: int | None = None,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    **package_fields: Any,
) -> Conversion:
    """`signature` picks a SavedModel's (or .tflite's) signature; `inputs`/`outputs` are a GraphDef's tensor
    names (found from its placeholders and unconsumed nodes when not given); `outputs` on the other kinds
    keeps those signature outputs only."""
    source = Path(source)
    kind = kind_of(source)
    if kind is None:
        raise ConversionError(f"{source}: not a SavedModel folder, a frozen GraphDef (.pb) or a .tflite file")
    if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("tf2onnx") is None:
        raise ConversionError(INSTALL)
    with tempfile.TemporaryDirectory(prefix="ferry-tf-") as tmp:
        work = Path(tmp)
        spec, reference = _run_source(kind, source, work, signature, inputs, outputs, example_inputs)
        model = _tf2onnx(kind, source, work, spec, signature, opset or DEFAULT_OPSET)
    rename_values(model, {e["tensor"]: e["name"] for e in spec["inputs"] + spec["outputs"] if e["tensor"] != e["name"]})
    if outputs and kind != "graphdef":
        package_fields["outputs"] = outputs
    package_fields["dim_names"] = {**batch_dim_names(model), **package_fields.get("dim_names", {})}
    package_fields.setdefault("name", source.stem if kind != "saved_model" else source.resolve().name)
    provenance = Provenance(
        framework=f"tensorflow ({kind})",
        framework_version=version_of("tensorflow-cpu") or version_of("tensorflow"),
        converter=f"ferry {ferry_version()} via tf2onnx",
        converter_version=version_of("tf2onnx"),
    )
    package = save(model, path, provenance=provenance, **package_fields)
    report = None
    if check:
        feeds = {n: reference[f"in/{n}"] for n in package.signature.input_names}
        expected = [reference[f"out/{n}"] for n in package.signature.output_names]
        report = check_package(package, feeds, expected, atol, rtol)
    return Conversion(package, f"tf2onnx ({kind})", report)


def _run_source(
    kind: str,
    source: Path,
    work: Path,
    signature: str,
    inputs: list[str] | None,
    outputs: list[str] | None,
    example: dict[str, np.ndarray] | np.ndarray | None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The signature and TensorFlow's own outputs on the check's inputs."""
    if example is not None:
        np.savez(work / "feeds.npz", **(example if isinstance(example, dict) else {"__single__": example}))
    command = [sys.executable, "-m", "ferry.converters.tensorflow_worker", kind, str(source), str(work)]
    command += ["--signature", signature, "--inputs", ",".join(inputs or []), "--outputs", ",".join(outputs or [])]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ConversionError(f"{source}: {_last_line(done.stderr)}")
    spec = json.loads((work / "spec.json").read_text(encoding="utf-8"))
    with np.load(work / "reference.npz", allow_pickle=False) as data:
        reference = dict(data)
    return spec, reference


def _tf2onnx(kind: str, source: Path, work: Path, spec: dict[str, Any], signature: str, opset: int) -> onnx.ModelProto:
    target = work / "model.onnx"
    flag = {"saved_model": "--saved-model", "graphdef": "--graphdef", "tflite": "--tflite"}[kind]
    command = [
        sys.executable,
        "-m",
        "tf2onnx.convert",
        flag,
        str(source),
        "--output",
        str(target),
        "--opset",
        str(opset),
    ]
    if kind == "saved_model":
        command += ["--signature_def", signature]
    if kind == "graphdef":
        command += ["--inputs", ",".join(e["tensor"] for e in spec["inputs"])]
        command += ["--outputs", ",".join(e["tensor"] for e in spec["outputs"])]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0 or not target.is_file():
        raise ConversionError(f"tf2onnx could not convert {source}: {_last_line(done.stderr)}")
    # tf2onnx's command line logs an op it has no rule for and writes the model anyway, with the TF op left in.
    unsupported = UNSUPPORTED.findall(done.stderr)
    if unsupported:
        listed = "; ".join(f"{op} at node {node!r}" for node, op in unsupported)
        raise ConversionError(
            f"tf2onnx {version_of('tf2onnx')} has no ONNX conversion for {len(unsupported)} TensorFlow op(s) in "
            f"{source}: {listed}"
        )
    return onnx.load(str(target))


def _last_line(stderr: str) -> str:
    """The line that says what went wrong: an exception's last line, else the last ERROR log line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if " - ERROR - " in line]
    pick = lines[-1] if lines and not lines[-1].startswith("20") else (errors[-1] if errors else "")
    return pick.split(" - ERROR - ")[-1] or "failed without a message"
