"""An engine's converted files for a package, made once: the ncnn and MNN backends ask here.

The first use converts and records the files in the package (`engines/<engine>/`, checksummed in the
manifest, so `ferry.load` verifies them); later uses load what is recorded. A package that cannot be
written (read-only, or a bare .onnx) gets a conversion in a temporary folder, every time, with a warning.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from ferry.errors import ConversionError, ParityError
from ferry.exporters import engine_check
from ferry.exporters.device import EngineModel
from ferry.package import ModelPackage

log = logging.getLogger("ferry")


def converter(engine: str):  # -> the engine module's convert(package, out, **options)
    if engine == "ncnn":
        from ferry.exporters import ncnn

        return ncnn.convert
    if engine == "mnn":
        from ferry.exporters import mnn

        return mnn.convert
    from ferry.exporters import ort_format

    return ort_format.convert


def engine_files(package: ModelPackage, engine: str, **options: Any) -> tuple[Path, EngineModel]:
    """(the folder holding the engine's files, their record), converting with `options` (ncnn: `shapes`)
    if the package has none recorded."""
    recorded = package.manifest.engines.get(engine)
    if recorded is not None and package.root is not None:
        return package.root / "engines" / engine, EngineModel.from_dict(recorded)
    scratch = Path(tempfile.mkdtemp(prefix=f"ferry-{engine}-"))
    model = converter(engine)(package, scratch, **options)
    # Run once in a child first: an engine that crashes on what its converter wrote takes only the child,
    # and one that computes something else (NaN, garbage) is refused here rather than served.
    try:
        report = engine_check.check(package, scratch, model, *engine_check.PARITY)
    except ParityError as exc:
        raise ConversionError(f"{engine} computes something else than ONNX Runtime on made-up inputs: {exc}") from None
    model.options["checked_max_abs"] = report.max_abs
    if package.root is not None and os.access(package.root, os.W_OK):
        package.add_engine(engine, scratch, model.to_dict())
        return package.root / "engines" / engine, model
    log.warning("%s: cannot record the %s files in the package (not writable); converted into %s",
                package.model_path, engine, scratch)  # fmt: skip
    return scratch, model
