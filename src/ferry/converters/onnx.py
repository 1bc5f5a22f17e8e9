"""A plain .onnx file -> package: checked for unsafe paths and unknown ops, pruned, dims named."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import onnx as onnx_lib

from ferry.converters._common import check_package, ferry_version, version_of
from ferry.converters.parity import random_feeds
from ferry.converters.result import Conversion
from ferry.errors import ConversionError, PackageError
from ferry.package import Provenance, load, save
from ferry.package.graph import default_opset


def convert_onnx(
    source: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    opset: int | None = None,
    check: bool = True,
    example_inputs: dict[str, Any] | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    **package_fields: Any,
) -> Conversion:
    source = Path(source)
    original = load(source)  # validates external-data paths and ops before any weight is read
    try:
        model = onnx_lib.load(str(source), load_external_data=True)
    except Exception as exc:
        raise PackageError(f"{source}: could not read the model: {exc}") from exc
    if opset is not None and opset != default_opset(model):
        try:
            model = onnx_lib.version_converter.convert_version(model, opset)
        except Exception as exc:
            raise ConversionError(f"{source}: could not convert to opset {opset}: {exc}") from exc
    producer = model.producer_name or "onnx"
    provenance = Provenance(
        framework=producer,
        framework_version=model.producer_version,
        converter=f"ferry {ferry_version()}",
        converter_version=version_of("onnx"),
    )
    package_fields.setdefault("name", source.stem)
    package = save(model, path, provenance=provenance, **package_fields)
    report = None
    if check:
        # Run the untouched file and the package on the same inputs: pruning must not change a thing.
        from ferry.inference import Config, create_predictor

        config = Config(original)
        config.set_backend("onnxruntime")
        predictor = create_predictor(config)
        outputs = package.signature.output_names
        if example_inputs is not None:
            try:
                feeds, src = example_inputs, predictor.predict(example_inputs, outputs)
            except Exception as exc:
                raise ConversionError(f"{source}: the original model did not run for the check: {exc}") from exc
        else:
            feeds, src = _made_up_run(original.signature, lambda f: predictor.predict(f, outputs), source)
        names = package.signature.output_names
        kept = {n: feeds[n] for n in package.signature.input_names}
        report = check_package(package, kept, [src[n] for n in names], atol, rtol)
    return Conversion(package, "onnx", report)


# Named dimensions past the batch axis take these sizes in turn: 8 keeps the check cheap; image models
# that downsample by 32 (PP-OCR's detector, shipped by rapidocr-onnxruntime, failed at 8) run at 64 or 224.
MADE_UP_SIZES = (8, 64, 224)


def _made_up_run(signature: Any, run: Any, source: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Made-up inputs the original model runs on, and its outputs: the first size in MADE_UP_SIZES that works."""
    errors = []
    for size in MADE_UP_SIZES:
        dims = {d: size for s in signature.inputs for axis, d in enumerate(s.shape) if isinstance(d, str) and axis}
        feeds = random_feeds(signature, dims=dims)
        try:
            return feeds, run(feeds)
        except Exception as exc:  # noqa: BLE001 (tried at the next size; all reasons go in the message)
            errors.append(
                f"at size {size}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
            )
    raise ConversionError(
        f"{source}: the original model did not run for the check on made-up inputs ({'; '.join(errors)}); "
        "pass example_inputs"
    )
