"""Inference: safe weight loading, the Predictor (training preprocessing, TTA) and output files."""
from ..utils.devices import resolve_device
from .outputs import overlay, save_png, side_by_side, write_prediction_outputs
from .prediction import Prediction
from .predictor import Predictor
from .weights import DEFAULT_WEIGHTS, WeightsError, default_weights_source, load_model

__all__ = ["DEFAULT_WEIGHTS", "Prediction", "Predictor", "WeightsError", "default_weights_source",
           "load_model", "overlay", "resolve_device", "save_png", "side_by_side", "write_prediction_outputs"]
