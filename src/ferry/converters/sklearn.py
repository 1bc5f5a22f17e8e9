"""scikit-learn estimators and pipelines -> package, through skl2onnx.

Classifiers are exported with plain tensors out (`label`, `probabilities`), not a list of dicts, so that
every backend and client can read them.
"""

from __future__ import annotations

import locale as pylocale
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ferry.converters._common import batch_dim_names, check_package, ferry_version, quiet, rename_values, version_of
from ferry.converters.result import Conversion
from ferry.errors import ConversionError
from ferry.package import Provenance, save

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
    example_inputs: Any = None,
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
    options: dict[Any, dict[str, Any]] = {id(estimator): {"zipmap": False}} if classifier else {}
    notes = []
    locale = string_locale()
    if locale:
        from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

        options |= {TfidfVectorizer: {"locale": locale}, CountVectorizer: {"locale": locale}}
    try:
        with quiet():
            model = to_onnx(estimator, x[:1], options=options or None, target_opset=opset)
    except Exception as exc:
        raise ConversionError(f"skl2onnx could not convert {type(estimator).__name__}: {exc}") from exc
    if locale and any(n.op_type == "StringNormalizer" for n in model.graph.node):
        notes.append(
            f"text is lower-cased in the {locale} locale ({DEFAULT_LOCALE} is not installed here); "
            "ONNX Runtime needs that locale on the machine that runs the package"
        )
    inputs = [i for i in model.graph.input]
    if len(inputs) == 1 and inputs[0].name != input_name:
        rename_values(model, {inputs[0].name: input_name})
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
    package_fields["dim_names"] = {**batch_dim_names(model), **package_fields.get("dim_names", {})}
    package = save(model, path, provenance=provenance, **package_fields)
    report = None
    if check:
        expected = [np.asarray(estimator.predict(x))]
        if classifier:
            expected.append(np.asarray(estimator.predict_proba(x), dtype=np.float32))
        specs = package.signature.outputs
        expected = [e.reshape(-1, 1) if e.ndim == 1 and len(s.shape) == 2 else e for e, s in zip(expected, specs)]
        report = check_package(package, _feeds(package, x), expected, atol, rtol)
    return Conversion(package, "skl2onnx", report, tuple(notes))


# ONNX Runtime's StringNormalizer (skl2onnx's lower-casing for text vectorizers) loads this locale unless the
# model names another, and fails to load where it is not installed: Debian's and Ubuntu's base images (and
# this machine) have C.UTF-8 only.
DEFAULT_LOCALE = "en_US.UTF-8"


def string_locale() -> str | None:
    """None where ONNX Runtime's default text locale is installed (or on Windows, which names locales
    its own way); else the first UTF-8 locale that is, for skl2onnx to write into the model."""
    if sys.platform == "win32":
        return None
    current = pylocale.setlocale(pylocale.LC_CTYPE)
    try:
        for name in (DEFAULT_LOCALE, "C.UTF-8"):
            try:
                pylocale.setlocale(pylocale.LC_CTYPE, name)
            except pylocale.Error:
                continue
            return None if name == DEFAULT_LOCALE else name
        return None
    finally:
        pylocale.setlocale(pylocale.LC_CTYPE, current)


def _feeds(package: Any, x: Any) -> dict[str, np.ndarray]:
    """The package's inputs from the example: one array, or a DataFrame's columns as (n, 1) arrays."""
    names = package.signature.input_names
    if not hasattr(x, "columns"):
        return {names[0]: x}
    return {name: x[name].to_numpy().reshape(-1, 1) for name in names}


def _example(estimator: Any, example: Any) -> Any:
    """A (n, features) float32 array, a 1-D array of texts, or a DataFrame (one input per column: skl2onnx
    maps a ColumnTransformer's column names to inputs), float64 made float32 as scikit-learn's converters
    expect (a float64 column beside float32 ones fails to load in ONNX Runtime)."""
    if hasattr(example, "columns"):
        floats = {c: np.float32 for c, t in example.dtypes.items() if t == np.float64}
        return example.astype(floats) if floats else example
    if example is not None:
        x = np.asarray(example)
        return x.astype(np.float32) if x.dtype == np.float64 else x
    n = getattr(estimator, "n_features_in_", None)
    if n is None:
        raise ConversionError(
            f"{type(estimator).__name__} does not say how many features it takes; pass example_inputs"
        )
    return np.random.default_rng(0).standard_normal((8, n)).astype(np.float32)
