"""The click refiner's starting point: the segmentation model with three more input channels.

The refiner is a DS-AttentionUNet whose input adds the previous probability map and the positive
and negative click disks to the RGB photo (``click_conditioned=True``, ``in_channels=6``). Training
starts from the shipped segmentation model with the extra channels' first-layer weights at zero,
so before any training step the refiner outputs exactly what the model does and the fine-tuning
only has to learn what the clicks add (RITM initialises its extra input the same way).
"""
from __future__ import annotations

from .blocks import widen_input
from .ds_attention_unet import CLICK_CHANNELS, DSAttentionUNet


def click_refiner_from(model: DSAttentionUNet, config: dict, click_radius: int = 5) -> DSAttentionUNet:
    """A click-conditioned copy of ``model`` (built from its constructor arguments ``config``).

    Every tensor is copied; the first convolutions' weights (shape (C_out, 3, k, k)) get zero
    weights for the three new input channels. ValueError for a model that already takes clicks.
    """
    if getattr(model, "click_conditioned", False):
        raise ValueError("the model is already a click refiner; start from the segmentation model")
    refiner = DSAttentionUNet(**{**config, "in_channels": 3 + CLICK_CHANNELS, "click_conditioned": True,
                                 "click_radius": int(click_radius)})
    target = refiner.state_dict()
    state = {}
    for name, tensor in model.state_dict().items():
        want = target[name].shape
        if tensor.shape != want:
            if tensor.dim() != 4 or tensor.shape[1] != 3 or want[1] != 3 + CLICK_CHANNELS:
                raise ValueError(f"{name}: cannot widen {tuple(tensor.shape)} to {tuple(want)}")
            tensor = widen_input(tensor, want[1])
        state[name] = tensor
    refiner.load_state_dict(state, strict=True)
    return refiner
