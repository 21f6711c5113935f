"""Model definitions. The model never imports data or training code."""
from .ds_attention_unet import ARCHITECTURE, DSAttentionUNet

__all__ = ["ARCHITECTURE", "DSAttentionUNet"]
