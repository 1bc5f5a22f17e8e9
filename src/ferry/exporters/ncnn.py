"""ONNX -> ncnn (`model.ncnn.param` + `model.ncnn.bin`) through pnnx, the converter ncnn's authors ship.

pnnx traces at one input shape, renames inputs and outputs `in0, in1, ...` / `out0, ...` in the graph's
order, and writes an op it cannot map as a layer named after the op (`torch.where`, `IsNaN`) while still
exiting 0; so every layer type is checked against ncnn's own registry here, and a miss names the op and
the layer. ncnn computes in float (int64 token ids become int32, and most integer ops have no layer), and
has no batch axis: the backend runs a batch one sample at a time.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import tempfile
from pathlib import Path

from ferry.errors import ConversionError
from ferry.exporters.device import EngineModel, fixed_shapes
from ferry.package import ModelPackage

PARAM, BIN = "model.ncnn.param", "model.ncnn.bin"
INSTALL = "the ncnn target needs ncnn and pnnx: pip install 'ferry[ncnn]'"
_PNNX_TYPES = {"float32": "f32", "float16": "f16", "int64": "i64", "int32": "i32", "uint8": "u8", "int8": "i8"}


def pnnx_executable() -> Path:
    """pnnx's binary inside its wheel (importing `pnnx` itself would import torch)."""
    spec = importlib.util.find_spec("pnnx")
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("ncnn") is None:
        raise ConversionError(INSTALL)
    return Path(next(iter(spec.submodule_search_locations))) / "pnnx"


def convert(
    package: ModelPackage, out: Path, *, fp16: bool = False, shapes: dict[str, list[int]] | None = None
) -> EngineModel:
    """Write PARAM and BIN into `out`; `fp16` stores the weights in half precision."""
    import ncnn

    exe = pnnx_executable()
    _check_readable(package)
    fixed = fixed_shapes(package, shapes, "ncnn")
    specs = package.signature.inputs
    arg = ",".join(f"[{','.join(map(str, fixed[s.name]))}]{_PNNX_TYPES.get(s.dtype, 'f32')}" for s in specs)
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ferry-pnnx-") as tmp:
        scratch = Path(tmp)  # pnnx writes its own intermediate files (.pnnx.param, _pnnx.py, ...) too,
        source = scratch / package.model_path.name  # and a simplified copy beside its input
        for f in package.model_path.parent.iterdir():
            if f.is_file():
                (scratch / f.name).symlink_to(f.resolve())
        command = [str(exe), str(source), f"inputshape={arg}", f"fp16={int(fp16)}",
                   f"ncnnparam={out / PARAM}", f"ncnnbin={out / BIN}", f"pnnxparam={scratch / 'p.param'}",
                   f"pnnxbin={scratch / 'p.bin'}", f"pnnxpy={scratch / 'p.py'}", f"pnnxonnx={scratch / 'p.onnx'}",
                   f"ncnnpy={scratch / 'n.py'}"]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, cwd=scratch)
    if done.returncode != 0 or not (out / PARAM).is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ConversionError(f"pnnx could not convert {package.name!r}: {' / '.join(tail) or 'no message'}")
    layers = read_layers(out / PARAM)
    missing = [(kind, name) for kind, name in layers if ncnn.layer_to_index(kind) < 0]
    if missing:
        listed = "; ".join(f"{kind} at layer {name!r}" for kind, name in missing[:8])
        more = f" (and {len(missing) - 8} more)" if len(missing) > 8 else ""
        raise ConversionError(f"ncnn has no layer for {len(missing)} op(s) of {package.name!r}: {listed}{more}")
    names = package.signature
    return EngineModel(
        engine="ncnn",
        files=[PARAM, BIN],
        inputs={n: f"in{i}" for i, n in enumerate(names.input_names)},
        outputs={n: f"out{i}" for i, n in enumerate(names.output_names)},
        converter=f"pnnx {importlib.metadata.version('pnnx')}",
        shapes=fixed,
        options={"fp16": fp16},
    )


def _check_readable(package: ModelPackage) -> None:
    """What pnnx cannot read at all, said before it fails with a message about shape inference."""
    strings = [s.name for s in package.signature.inputs if s.dtype not in _PNNX_TYPES]
    if strings:
        raise ConversionError(f"ncnn takes number tensors; {package.name!r} has input(s) {strings} of another type")
    foreign = [n for n in package.graph_proto().graph.node if n.domain not in ("", "ai.onnx")]
    if foreign:
        listed = "; ".join(f"{n.domain}.{n.op_type} at node {n.name!r}" for n in foreign[:8])
        raise ConversionError(f"pnnx reads standard ONNX operators only; {package.name!r} has {listed}")


def read_layers(param: Path) -> list[tuple[str, str]]:
    """(layer type, layer name) of every layer in an ncnn .param file (after the magic and counts lines)."""
    lines = param.read_text(encoding="utf-8").splitlines()[2:]
    return [(parts[0], parts[1]) for parts in (line.split() for line in lines) if len(parts) >= 2]
