"""ferry: carry a trained model from any framework into production.

pkg = ferry.convert("model.onnx", "my-model")          # or ferry.export(torch_module, x, "my-model")
predictor = ferry.create_predictor(ferry.Config("my-model"))
outputs = predictor.predict({"input": batch})
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Names load on first use, so that `import ferry.lite` on a device pulls in numpy alone (no onnx).
_EXPORTS = {
    "errors": "ferry.errors",
    "FerryError": "ferry.errors",
    "Conversion": "ferry.converters",
    "convert": "ferry.converters",
    "export": "ferry.converters",
    "Config": "ferry.inference",
    "Predictor": "ferry.inference",
    "PredictorPool": "ferry.inference",
    "create_predictor": "ferry.inference",
    "ModelPackage": "ferry.package",
    "load": "ferry.package",
    "save": "ferry.package",
    "eval": "ferry.compress.evaluate",
    "quantize": "ferry.compress.quantize",
}

if TYPE_CHECKING:
    from ferry import errors
    from ferry.converters import Conversion, convert, export
    from ferry.errors import FerryError
    from ferry.inference import Config, Predictor, PredictorPool, create_predictor
    from ferry.package import ModelPackage, load, save


_RENAMED = {"eval": "evaluate"}  # ferry.eval is compress.evaluate.evaluate (not to shadow the builtin there)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ferry' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    value = module if module.__name__ == f"ferry.{name}" else getattr(module, _RENAMED.get(name, name))
    globals()[name] = value
    return value


__all__ = [
    "Config",
    "Conversion",
    "FerryError",
    "ModelPackage",
    "Predictor",
    "PredictorPool",
    "convert",
    "create_predictor",
    "errors",
    "export",
    "load",
    "save",
]
