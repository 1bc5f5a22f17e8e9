"""scikit-learn estimators and pipelines -> package, through skl2onnx.

Classifiers are exported with plain tensors out (`label`, `probabilities`), not a list of dicts, so that
every backend and client can read them.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ferry.converters._common import check_package, ferry_version, quiet, version_of
from ferry.converters.result import Conversion
from ferry.errors import ConversionError
from ferry.package import Provenance, save
from ferry.package.graph import fixed_size, graph_inputs

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


def load_estimator(source: str | os.PathLike[str], trust_pickle: bool = False) -> Any:
    """An estimator from a file. `.skops` files (scikit-learn's safe format) load without running code, and
    refuse types outside skops' trusted list. Pickles (`.pkl`, `.pickle`, `.joblib`) run code when they are
    read, as `torch.load` without `weights_only` does: they load only with `trust_pickle=True`."""
    source = Path(source)
    if source.suffix == ".skops":
        return _load_skops(source)
    if not trust_pickle:
        raise ConversionError(
            f"{source}: a pickle runs code when it is read, so ferry opens one only when told the file is "
            "trusted: --trust-pickle (trust_pickle=True in Python). Safer: save the model with skops "
            "(skops.io.dump(model, 'model.skops')) and convert that"
        )
    try:
        if source.suffix == ".joblib":
            import joblib

            return joblib.load(source)
        with open(source, "rb") as f:
            return pickle.load(f)
    except Exception as exc:
        raise ConversionError(f"{source}: could not unpickle an estimator: {exc}") from exc


def _load_skops(source: Path) -> Any:
    try:
        import skops.io as sio
    except ImportError:
        raise ConversionError("reading .skops files needs skops: pip install 'ferry[sklearn]'") from None
    try:
        untrusted = sio.get_untrusted_types(file=source)
    except Exception as exc:
        raise ConversionError(f"{source}: not a skops file: {exc}") from exc
    if untrusted:
        raise ConversionError(
            f"{source}: holds types skops does not trust by default: {untrusted}; ferry loads only the ones "
            "scikit-learn ships. Inspect them, then load the model yourself with "
            "skops.io.load(path, trusted=[...]) and pass the estimator to ferry.convert"
        )
    try:
        return sio.load(source)
    except Exception as exc:
        raise ConversionError(f"{source}: could not read the skops file: {exc}") from exc


def convert_sklearn(
    estimator: Any,
    path: str | os.PathLike[str],
    *,
    example_inputs: np.ndarray | None = None,
    input_name: str = "input",
    opset: int | None = None,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    trust_pickle: bool = False,
    **package_fields: Any,
) -> Conversion:
    try:
        from skl2onnx import to_onnx
    except ImportError:
        raise ConversionError("converting scikit-learn models needs skl2onnx: pip install 'ferry[sklearn]'") from None
    if isinstance(estimator, (str, os.PathLike)):
        estimator = load_estimator(estimator, trust_pickle)
    x = _example(estimator, example_inputs)
    classifier = hasattr(estimator, "predict_proba") and hasattr(estimator, "classes_")
    options = {id(estimator): {"zipmap": False}} if classifier else None
    try:
        with quiet():
            model = to_onnx(estimator, x[:1], options=options, target_opset=opset)
    except Exception as exc:
        raise ConversionError(f"skl2onnx could not convert {type(estimator).__name__}: {exc}") from exc
    inputs = [i for i in model.graph.input]
    if len(inputs) == 1 and inputs[0].name != input_name:
        _rename_value(model, inputs[0].name, input_name)
    if classifier:
        package_fields.setdefault("labels", [str(c) for c in estimator.classes_])
    provenance = Provenance(
        framework="scikit-learn",
        framework_version=version_of("scikit-learn"),
        converter=f"ferry {ferry_version()} via skl2onnx",
        converter_version=version_of("skl2onnx"),
    )
    package_fields.setdefault("name", type(estimator).__name__.lower())
    # Every row of a scikit-learn model is one sample: axis 0 of every input and output is the batch, named
    # so that the server merges requests (skl2onnx names them N, unk__0, unk__1, ...). --dim still wins.
    batch = {f"{v.name}:0": "batch" for v in [*graph_inputs(model), *model.graph.output] if _dynamic_axis0(v)}
    package_fields["dim_names"] = {**batch, **package_fields.get("dim_names", {})}
    package = save(model, path, provenance=provenance, **package_fields)
    report = None
    if check:
        expected = [np.asarray(estimator.predict(x))]
        if classifier:
            expected.append(np.asarray(estimator.predict_proba(x), dtype=np.float32))
        specs = package.signature.outputs
        expected = [e.reshape(-1, 1) if e.ndim == 1 and len(s.shape) == 2 else e for e, s in zip(expected, specs)]
        report = check_package(package, {package.signature.inputs[0].name: x}, expected, atol, rtol)
    return Conversion(package, "skl2onnx", report)


def _example(estimator: Any, example: np.ndarray | None) -> np.ndarray:
    if example is not None:
        x = np.asarray(example)
        return x.astype(np.float32) if x.dtype == np.float64 else x
    n = getattr(estimator, "n_features_in_", None)
    if n is None:
        raise ConversionError(
            f"{type(estimator).__name__} does not say how many features it takes; pass example_inputs"
        )
    return np.random.default_rng(0).standard_normal((8, n)).astype(np.float32)


def _dynamic_axis0(value: Any) -> bool:
    dims = value.type.tensor_type.shape.dim
    return bool(dims) and fixed_size(dims[0]) is None


def _rename_value(model: Any, old: str, new: str) -> None:
    for value in model.graph.input:
        if value.name == old:
            value.name = new
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
