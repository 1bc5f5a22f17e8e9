"""Converters: bring a model from another framework into a ferry package, checked numerically.

`convert(source, path)` picks the converter from what `source` is; `export` is the PyTorch one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ferry.converters.parity import ParityReport
from ferry.converters.result import Conversion
from ferry.errors import ConversionError


def export(module: Any, example_inputs: Any, path: str | os.PathLike[str], **kwargs: Any) -> Conversion:
    """Export a torch.nn.Module; see `ferry.converters.torch.export` for the options."""
    from ferry.converters.torch import export as torch_export

    return torch_export(module, example_inputs, path, **kwargs)


def detect(source: Any) -> str:
    """'onnx', 'paddle', 'sklearn', 'keras', 'tensorflow' or 'torch' for what `source` is, or a
    ConversionError."""
    if isinstance(source, (str, os.PathLike)):
        from ferry.converters.tensorflow import kind_of

        p = Path(source)
        if not p.exists() and not any(p.with_name(p.name + s).exists() for s in (".json", ".pdmodel")):
            raise ConversionError(f"{p}: no such file or folder")
        if p.suffix == ".onnx":
            return "onnx"
        if p.suffix in (".pkl", ".pickle", ".joblib", ".skops"):
            return "sklearn"
        if p.suffix in (".keras", ".h5", ".hdf5"):
            return "keras"
        if kind_of(p):
            return "tensorflow"
        if p.suffix in (".json", ".pdmodel") or not p.exists() or p.is_dir():
            return "paddle"
        raise ConversionError(
            f"{p}: cannot tell the framework from the name; expected .onnx, .keras/.h5 (Keras), a SavedModel "
            "folder, .pb (frozen GraphDef) or .tflite (TensorFlow), "
            ".skops/.pkl/.joblib (scikit-learn), .json/.pdmodel or a folder (PaddlePaddle)"
        )
    kinds = {cls.__module__.split(".")[0] for cls in type(source).__mro__}
    if "keras" in kinds:  # before torch: a Keras model on the torch backend is also a torch.nn.Module
        return "keras"
    if "torch" in kinds:
        return "torch"
    if "sklearn" in kinds:
        return "sklearn"
    raise ConversionError(f"do not know how to convert a {type(source).__name__}")


def convert(source: Any, path: str | os.PathLike[str], **kwargs: Any) -> Conversion:
    """Convert `source` (a file, folder, estimator or module) into a package at `path`."""
    kind = detect(source)
    if kind == "onnx":
        from ferry.converters.onnx import convert_onnx

        return convert_onnx(source, path, **kwargs)
    if kind == "paddle":
        from ferry.converters.paddle import convert_paddle

        return convert_paddle(source, path, **kwargs)
    if kind == "sklearn":
        from ferry.converters.sklearn import convert_sklearn

        return convert_sklearn(source, path, **kwargs)
    if kind == "keras":
        from ferry.converters.keras import convert_keras

        return convert_keras(source, path, **kwargs)
    if kind == "tensorflow":
        from ferry.converters.tensorflow import convert_tensorflow

        return convert_tensorflow(source, path, **kwargs)
    example = kwargs.pop("example_inputs", None)
    if example is None:
        raise ConversionError("converting a torch module needs example_inputs")
    return export(source, example, path, **kwargs)


__all__ = ["Conversion", "ParityReport", "convert", "detect", "export"]
