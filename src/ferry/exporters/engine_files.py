"""An engine's converted files for a package, made once: the ncnn and MNN backends ask here, and the
onnxruntime backend for ORT's transformer fusions.

The first use converts and records the files in the package (`engines/<engine>/`, checksummed in the
manifest, so `ferry.load` verifies them); later uses load what is recorded. A package that cannot be
written (read-only, or a bare .onnx) gets a conversion in a temporary folder, every time, with a warning.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ferry.errors import ConversionError, ParityError
from ferry.exporters import engine_check
from ferry.exporters.device import EngineModel
from ferry.package import ModelPackage

log = logging.getLogger("ferry")


# engine -> the module whose convert(package, out, **options) makes its files
CONVERTERS = {"ncnn": "ncnn", "mnn": "mnn", "ort": "ort_format", "onnxruntime-fused": "ort_fusion"}
# Engines whose refusal is recorded too, so that it is not tried again on every load: ORT's transformer
# optimizer decides in a second whether a transformer-looking graph fuses. (A device engine's refusal is
# not: the user asked for that engine and hears why, each time.)
REMEMBER_REFUSALS = {"onnxruntime-fused"}


def engine_files(package: ModelPackage, engine: str, **options: Any) -> tuple[Path, EngineModel]:
    """(the folder holding the engine's files, their record), converting with `options` (ncnn: `shapes`)
    if the package has none recorded; a ConversionError when the engine cannot take the model."""
    recorded = package.manifest.engines.get(engine)
    if recorded is not None and options.get("shapes") not in (None, recorded.get("shapes")):
        recorded = None  # ncnn at other input shapes: converted again, the record replaced
    if recorded is not None and package.root is not None:
        model = EngineModel.from_dict(recorded)
        if not model.refused:
            return package.root / "engines" / engine, model
        if model.converter == _converter_version(engine):
            raise ConversionError(model.refused)  # else a newer converter gets to try again
    scratch = Path(tempfile.mkdtemp(prefix=f"ferry-{engine}-"))
    try:
        model = _convert_and_check(package, engine, scratch, options)
    except ConversionError as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        if engine in REMEMBER_REFUSALS and _writable(package):
            refusal = EngineModel(engine, [], {}, {}, _converter_version(engine), refused=str(exc))
            with tempfile.TemporaryDirectory() as empty:
                package.add_engine(engine, Path(empty), refusal.to_dict())
        raise
    if _writable(package):
        package.add_engine(engine, scratch, model.to_dict())
        shutil.rmtree(scratch, ignore_errors=True)
        return package.root / "engines" / engine, model
    log.warning("%s: cannot record the %s files in the package (not writable); converted into %s",
                package.model_path, engine, scratch)  # fmt: skip
    return scratch, model


def _convert_and_check(package: ModelPackage, engine: str, scratch: Path, options: dict[str, Any]) -> EngineModel:
    module = importlib.import_module(f"ferry.exporters.{CONVERTERS[engine]}")
    model = module.convert(package, scratch, **options)
    # Run once in a child first: an engine that crashes on what its converter wrote takes only the child,
    # and one that computes something else (NaN, garbage) is refused here rather than served.
    try:
        report, exact = engine_check.check(package, scratch, model, *engine_check.REFUSE)
    except ParityError as exc:
        raise ConversionError(
            f"{engine} runs {package.name!r} but computes something else than ONNX Runtime on made-up inputs: "
            + "; ".join(exc.failures)
        ) from None
    model.options["checked_max_abs"] = report.max_abs
    if not exact:
        log.warning("%s runs %r %.2g off ONNX Runtime on made-up inputs, beyond fp32's 1e-4 + 1e-3 x |x|",
                    engine, package.name, report.max_abs)  # fmt: skip
    return model


def _writable(package: ModelPackage) -> bool:
    return package.root is not None and os.access(package.root, os.W_OK)


def _converter_version(engine: str) -> str:
    dist = {"ncnn": "pnnx", "mnn": "MNN"}.get(engine, "onnxruntime")
    return f"{dist} {importlib.metadata.version(dist)}"
