"""Fine-tuning a trained model (``--finetune WEIGHTS``): its model and its settings.

The model is the weights' own: the architecture from their ``config.json`` (a YAML's ``model:``
is not used, ``--model`` / ``--encoder`` are refused), every tensor from their
``model.safetensors`` (no ImageNet initialisation). What the run sets anew is the training size
and, after training, the threshold and operating points tuned on the run's validation data.
The data, the original data and the new mixed, is :mod:`lesionseg.training.run_data`'s.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from ..models.weights import WeightsError, load_model
from ..models import DSAttentionUNet
from .config import TrainConfig

log = logging.getLogger(__name__)
# a fine-tuning run's default learning rate: this share of the recipe's (or the default) one, so
# that a few corrections adjust the trained weights rather than undo them
FINETUNE_LR_FACTOR = 0.1
# config.json values the fine-tuned model gets anew (the rest is its architecture)
RETUNED = ("inference_img_size", "inference_threshold", "inference_operating_points")


def _load(source: str) -> DSAttentionUNet:
    try:
        model = load_model(source)
    except WeightsError as e:
        raise WeightsError(f"--finetune {e}") from None  # one line naming the source and the fix
    if model.click_conditioned or model.in_channels != 3:
        raise WeightsError(f"{source}: a click refiner, not a segmentation model; fine-tune the segmentation "
                           "weights it belongs to")
    return model


def weights_architecture(source: str) -> tuple[dict[str, Any], int]:
    """(DSAttentionUNet arguments of the weights, without ``RETUNED``; their input size)."""
    model = _load(source)
    config = {k: v for k, v in dict(model._hub_mixin_config).items() if k not in RETUNED}
    return config, int(model.inference_img_size)


def init_from_weights(model: DSAttentionUNet, source: str) -> None:
    """Load every tensor of ``source`` into ``model`` (built from :func:`weights_architecture`)."""
    try:
        model.load_state_dict(_load(source).state_dict())
    except RuntimeError as e:
        raise WeightsError(f"{source}: its tensors do not fit the model built from its config.json "
                           f"({' '.join(str(e).split())[:200]})") from None
    log.info("fine-tuning: every weight initialised from %s", source)


def finetune_settings(cfg: TrainConfig, file_values: dict[str, Any], flags: dict[str, Any]) -> None:
    """Complete a fine-tuning run's settings (in place) from the ``--config`` file's values and the
    flags given (None: not given).

    A ``--config`` that is the original training's recipe (not a fine-tuning run's own
    config.yaml) gives the default ``--mix-data`` (its ``data_dir``) and, times
    ``FINETUNE_LR_FACTOR``, the learning rate; its ``run_name`` is not reused, so that the run
    does not write into the original run's folder. ValueError / WeightsError: one line each.
    """
    recipe = {} if file_values.get("finetune") else file_values
    if flags.get("model") is not None or flags.get("encoder"):
        raise ValueError(f"--model and --encoder cannot change the model to fine-tune: its architecture comes "
                         f"from {cfg.finetune}/config.json; drop them")
    if cfg.images or cfg.masks:
        raise ValueError("--finetune reads the new data from --data-dir DIR and the original data from --mix-data "
                         "DIR, not from --images / --masks")
    if not cfg.data_dirs or (recipe.get("data_dir") and not flags.get("data_dir")):
        raise ValueError("--finetune needs the new data: --data-dir DIR (e.g. the folder the app saves "
                         "corrections to)")
    if cfg.mix_data is None:
        if not recipe.get("data_dir"):
            raise ValueError("--finetune needs the original training data to mix the new data with: --mix-data DIR "
                             "(the folder the weights were trained on, or --config with their recipe), or "
                             "--mix-data none to train on the new data alone")
        cfg.mix_data = recipe["data_dir"]
    if flags.get("lr") is None and not file_values.get("finetune"):
        cfg.lr *= FINETUNE_LR_FACTOR
    if flags.get("run_name") is None and not file_values.get("finetune"):
        cfg.run_name = f"finetune_{datetime.now():%Y%m%d_%H%M%S}"
    architecture, size = weights_architecture(cfg.finetune)  # a bad source fails here, before any output
    if flags.get("img_size") is None and "img_size" not in file_values:
        cfg.img_size = size
    if recipe.get("model"):
        log.info("fine-tuning: the architecture is %s's, not the config's model: %s", cfg.finetune, recipe["model"])
    cfg.model = architecture
    cfg.validate()
