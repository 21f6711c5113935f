"""Training: configuration, loop, checkpoints, figures. Imports data, losses, metrics and model."""
from .config import TrainConfig, build_config, load_yaml
from .loop import RunResult, fit

__all__ = ["RunResult", "TrainConfig", "build_config", "fit", "load_yaml"]
