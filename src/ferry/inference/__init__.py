"""The Predictor API: Config -> create_predictor -> handles or predict."""

from ferry.inference.config import Config, make_config
from ferry.inference.predictor import Predictor, PredictorPool, create_predictor

__all__ = ["Config", "Predictor", "PredictorPool", "create_predictor", "make_config"]
