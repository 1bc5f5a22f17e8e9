"""ferry: carry a trained model from any framework into production.

pkg = ferry.convert("model.onnx", "my-model")          # or ferry.export(torch_module, x, "my-model")
predictor = ferry.create_predictor(ferry.Config("my-model"))
outputs = predictor.predict({"input": batch})
"""

from ferry import errors
from ferry.convert import Conversion, convert, export
from ferry.errors import FerryError
from ferry.inference import Config, Predictor, PredictorPool, create_predictor
from ferry.package import ModelPackage, load, save

__version__ = "0.1.0"

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
