"""Loading weights is the models layer's job (:mod:`lesionseg.models.weights`, which training
uses too); this name is kept for the inference code and callers that import it from here."""
from ..models.weights import (CONFIG_NAME, DEFAULT_WEIGHTS, PICKLE_SUFFIXES, REFINER_FOLDER, SAFETENSORS_NAME,
                              WEIGHTS_ENV, WeightsError, default_weights_source, hub_extras_folder, load_model,
                              load_refiner, local_weights_folder, weights_source)

__all__ = ["CONFIG_NAME", "DEFAULT_WEIGHTS", "PICKLE_SUFFIXES", "REFINER_FOLDER", "SAFETENSORS_NAME", "WEIGHTS_ENV",
           "WeightsError", "default_weights_source", "hub_extras_folder", "load_model", "load_refiner",
           "local_weights_folder", "weights_source"]
