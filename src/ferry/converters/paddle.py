"""PaddlePaddle inference model -> package, through paddle2onnx.

Both formats that paddle 3.x writes are accepted: `inference.json` (PIR) or `inference.pdmodel` (legacy),
each with `inference.pdiparams`. paddle2onnx is told not to run polygraphy, which would otherwise
pip-install packages at run time.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ferry.converters._common import check_package, ferry_version, log, quiet, version_of
from ferry.converters.parity import random_feeds
from ferry.converters.result import Conversion
from ferry.errors import ConversionError
from ferry.package import Provenance, save

MODEL_SUFFIXES = (".json", ".pdmodel")


def find_model_files(source: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(program file, params file) from a folder, a program file, or a path prefix."""
    source = Path(source)
    if source.is_dir():
        programs = sorted(p for p in source.iterdir() if p.suffix in MODEL_SUFFIXES and p.stem != "ferry")
        programs = [p for p in programs if p.with_suffix(".pdiparams").is_file()]
        if len(programs) != 1:
            raise ConversionError(
                f"{source}: expected one Paddle program (.json or .pdmodel with a matching .pdiparams), "
                f"found {[p.name for p in programs] or 'none'}"
            )
        program = programs[0]
    elif source.suffix in MODEL_SUFFIXES:
        program = source
    else:
        candidates = [source.with_name(source.name + s) for s in MODEL_SUFFIXES]
        program = next((c for c in candidates if c.is_file()), candidates[0])
    params = program.with_suffix(".pdiparams")
    if not program.is_file() or not params.is_file():
        raise ConversionError(f"{source}: needs {program.name} and {params.name} side by side")
    return program, params


def convert_paddle(
    source: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    opset: int = 13,
    check: bool = True,
    example_inputs: dict[str, np.ndarray] | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    **package_fields: Any,
) -> Conversion:
    try:
        import paddle2onnx
    except ImportError:
        raise ConversionError(
            "converting a Paddle model needs paddle2onnx: pip install --no-deps paddle2onnx "
            "(its metadata pins an old onnx, which ferry does not need)"
        ) from None
    program, params = find_model_files(source)
    os.environ.setdefault("POLYGRAPHY_AUTOINSTALL_DEPS", "0")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.onnx"
        try:
            with quiet():
                paddle2onnx.export(
                    str(program), str(params), str(out), opset_version=opset, optimize_tool="None", verbose=False
                )
            model = onnx.load(str(out))
        except Exception as exc:
            raise ConversionError(f"{program}: paddle2onnx failed: {exc}") from exc
    _drop_unused_initializers(model)
    paddle_predictor = _paddle_predictor(program, params)
    if paddle_predictor is not None:
        _keep_paddle_names(model, paddle_predictor.get_output_names())
    package_fields["dim_names"] = {**_batch_dims(model), **package_fields.get("dim_names", {})}
    provenance = Provenance(
        framework="paddlepaddle",
        framework_version=version_of("paddlepaddle"),
        converter=f"ferry {ferry_version()} via paddle2onnx",
        converter_version=version_of("paddle2onnx"),
    )
    package_fields.setdefault("name", program.parent.name if program.stem == "inference" else program.stem)
    package = save(model, path, provenance=provenance, **package_fields)
    report = None
    if check and paddle_predictor is None:
        log.warning("paddlepaddle is not installed: skipping the parity check")
    elif check:
        feeds = example_inputs or random_feeds(package.signature)
        expected = _run_paddle(paddle_predictor, program, feeds, package.signature.output_names)
        report = check_package(package, feeds, expected, atol, rtol)
    return Conversion(package, "paddle2onnx", report)


def _paddle_predictor(program: Path, params: Path) -> Any:
    """Paddle Inference's own predictor, for names and the parity check; None without paddlepaddle."""
    try:
        import paddle.inference as paddle_infer
    except ImportError:
        return None
    config = paddle_infer.Config(str(program), str(params))
    config.disable_gpu()
    config.disable_glog_info()
    return paddle_infer.create_predictor(config)


def _keep_paddle_names(model: onnx.ModelProto, fetch_names: list[str]) -> None:
    """paddle2onnx renames legacy fetch targets to `fetch_name_N`; give them Paddle's names back."""
    outputs = [o.name for o in model.graph.output]
    if len(outputs) != len(fetch_names) or outputs == fetch_names:
        return
    rename = dict(zip(outputs, fetch_names))
    for node in model.graph.node:
        for i, name in enumerate(node.output):
            node.output[i] = rename.get(name, name)
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
    for value in [*model.graph.output, *model.graph.value_info]:
        value.name = rename.get(value.name, value.name)


def _run_paddle(predictor: Any, program: Path, feeds: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
    for name in predictor.get_input_names():
        if name not in feeds:
            raise ConversionError(f"{program}: Paddle input {name!r} has no example input")
        predictor.get_input_handle(name).copy_from_cpu(feeds[name])
    predictor.run()
    paddle_names = predictor.get_output_names()
    if paddle_names != names:
        raise ConversionError(f"{program}: Paddle outputs {paddle_names} but the package has {names}")
    return [predictor.get_output_handle(n).copy_to_cpu() for n in paddle_names]


def _batch_dims(model: onnx.ModelProto) -> dict[str, str]:
    """paddle2onnx calls a leading -1 `DynamicDimension.N`; ferry calls it `batch`."""
    names = {}
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param.startswith("DynamicDimension"):
            names[f"{value.name}:0"] = "batch"
    return names


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    used |= {o.name for o in model.graph.output}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
