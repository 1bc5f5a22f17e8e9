"""Keras 3 models (`.keras`, legacy `.h5`) -> package, through Keras on its torch backend: no TensorFlow.

Keras exports ONNX itself (`model.export(path, format="onnx")`, torch.onnx underneath), once the model has
been called. The graph keeps the model's input names; its outputs are renamed to Keras' output names, and
axis 0 of every input and output is `batch`. Parity is checked against `model.predict` on the same inputs.

The backend is chosen when Keras is first imported: ferry sets KERAS_BACKEND=torch unless it is already
set; a process that imported Keras on another backend gets a ConversionError saying so.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ferry.converters._common import batch_dim_names, check_package, ferry_version, quiet, rename_values, version_of
from ferry.converters.result import Conversion
from ferry.errors import ConversionError
from ferry.package import Provenance, save

SUFFIXES = (".keras", ".h5", ".hdf5")


def _keras() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError:
        raise ConversionError("converting Keras models needs Keras 3 and torch: pip install 'ferry[keras]'") from None
    if keras.backend.backend() != "torch":
        raise ConversionError(
            f"Keras is running on its {keras.backend.backend()!r} backend in this process; ferry exports through "
            "the torch backend: set KERAS_BACKEND=torch before Keras is imported"
        )
    return keras


def convert_keras(
    source: Any,
    path: str | os.PathLike[str],
    *,
    example_inputs: dict[str, np.ndarray] | np.ndarray | None = None,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    **package_fields: Any,
) -> Conversion:
    """`source` is a `.keras`/`.h5` file or a Keras model object."""
    keras = _keras()
    if isinstance(source, (str, os.PathLike)):
        name = Path(source).stem
        try:
            model = keras.saving.load_model(source, compile=False)
        except Exception as exc:
            raise ConversionError(f"{source}: Keras could not load the model: {exc}") from exc
    else:
        model, name = source, getattr(source, "name", "keras_model")
    feeds = _feeds(model, example_inputs)
    ordered = [feeds[n] for n in _input_names(model)]
    expected = model.predict(ordered if len(ordered) > 1 else ordered[0], verbose=0)  # also builds the model
    expected = expected if isinstance(expected, (list, tuple)) else [expected]
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "model.onnx"
        try:
            with quiet():
                model.export(str(target), format="onnx", verbose=False)
        except Exception as exc:
            raise ConversionError(f"Keras could not export {name!r} to ONNX: {type(exc).__name__}: {exc}") from exc
        graph = onnx.load(str(target))
    _rename_outputs(graph, [_output_name(model, i) for i in range(len(graph.graph.output))])
    package_fields["dim_names"] = {**batch_dim_names(graph), **package_fields.get("dim_names", {})}
    package_fields.setdefault("name", name)
    provenance = Provenance(
        framework="keras",
        framework_version=version_of("keras"),
        converter=f"ferry {ferry_version()} via keras.export (torch backend)",
        converter_version=version_of("torch"),
    )
    package = save(graph, path, provenance=provenance, **package_fields)
    report = None
    if check:
        names = [spec.name for spec in package.signature.inputs]
        report = check_package(package, {n: feeds[n] for n in names}, [np.asarray(e) for e in expected], atol, rtol)
    return Conversion(package, "keras.export (torch backend)", report)


def _input_names(model: Any) -> list[str]:
    return [t.name.split(":")[0] for t in model.inputs]


def _output_name(model: Any, index: int) -> str:
    """Functional models name their outputs after their output layers; a Sequential model's one output is
    its last layer's."""
    names = list(getattr(model, "output_names", None) or [])
    if not names and getattr(model, "layers", None):
        names = [model.layers[-1].name]
    return names[index] if index < len(names) else f"output_{index}"


def _feeds(model: Any, example: dict[str, np.ndarray] | np.ndarray | None) -> dict[str, np.ndarray]:
    names = _input_names(model)
    if isinstance(example, dict):
        missing = [n for n in names if n not in example]
        if missing:
            raise ConversionError(f"example_inputs lacks {missing}; the model takes {names}")
        return {n: np.asarray(example[n]) for n in names}
    if example is not None:
        if len(names) != 1:
            raise ConversionError(f"the model takes {names}: pass example_inputs as a dict")
        return {names[0]: np.asarray(example)}
    rng = np.random.default_rng(0)
    feeds = {}
    for tensor, name in zip(model.inputs, names):
        shape = [4 if d is None and axis == 0 else d for axis, d in enumerate(tensor.shape)]
        if any(d is None for d in shape):
            raise ConversionError(
                f"input {name!r} has dynamic dimensions besides the batch {list(tensor.shape)}: pass example_inputs"
            )
        dtype = np.dtype(str(tensor.dtype))
        feeds[name] = (rng.standard_normal(shape) if dtype.kind == "f" else rng.integers(0, 2, shape)).astype(dtype)
    return feeds


def _rename_outputs(model: onnx.ModelProto, names: list[str]) -> None:
    """Give the graph's outputs the model's own names (Keras' export numbers them)."""
    taken = {v.name for v in model.graph.input} | {i.name for i in model.graph.initializer}
    pairs = zip(model.graph.output, names)
    rename_values(model, {o.name: n for o, n in pairs if o.name != n and n not in taken})
