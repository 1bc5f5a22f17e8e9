"""What all converters share: version lookup, the parity run, and quiet third-party output."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import warnings
from collections.abc import Iterator

import numpy as np
import onnx

from ferry.converters.parity import ParityReport, compare
from ferry.package import ModelPackage
from ferry.package.graph import fixed_size, graph_inputs

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
    config.switch_transformer_fusion(False)  # the check is of model.onnx as written
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


def batch_dim_names(model: onnx.ModelProto) -> dict[str, str]:
    """`{"value:0": "batch"}` for every graph input and output whose axis 0 is dynamic: converters whose
    source says axis 0 is the batch (Keras, scikit-learn, TensorFlow) name it so the server merges requests
    (their exporters call it N, unk__0, batch_size, ...)."""
    names = {}
    for value in [*graph_inputs(model), *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and fixed_size(dims[0]) is None:
            names[f"{value.name}:0"] = "batch"
    return names


def rename_values(model: onnx.ModelProto, renames: dict[str, str]) -> None:
    """Rename graph values (inputs, outputs, node ends) in place, e.g. TensorFlow's `x:0` to `x`."""
    if not renames:
        return
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        value.name = renames.get(value.name, value.name)
    for node in model.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
