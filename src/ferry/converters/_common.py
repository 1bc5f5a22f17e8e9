"""What all converters share: version lookup, the parity run, and quiet third-party output."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import warnings
from collections.abc import Iterator

import numpy as np

from ferry.converters.parity import ParityReport, compare
from ferry.package import ModelPackage

log = logging.getLogger("ferry")


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def ferry_version() -> str:
    return version_of("ferry") or "0"


def check_package(
    package: ModelPackage,
    feeds: dict[str, np.ndarray],
    expected: list[np.ndarray],
    atol: float,
    rtol: float,
) -> ParityReport:
    """Run the written package on `feeds` with ONNX Runtime and compare with the source's outputs."""
    from ferry.inference import Config, create_predictor

    config = Config(package)
    config.set_backend("onnxruntime")
    got = create_predictor(config).predict(feeds)
    names = package.signature.output_names
    report = compare(package.name, names, expected, [got[n] for n in names], atol, rtol)
    log.info("%s", report)
    return report


@contextlib.contextmanager
def quiet(enabled: bool = True) -> Iterator[None]:
    """Silence exporters' prints and warnings; their errors still surface as exceptions."""
    if not enabled:
        yield
        return
    sink = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch", "torch.onnx", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
