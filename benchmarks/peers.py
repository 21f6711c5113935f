"""Peer models for section 3, built with random weights (no downloads).

PyPI's torchvision wheel for Linux is the CUDA build: with the CPU torch its compiled ops do not
load, and ``import torchvision`` then fails while registering fake kernels for ``nms`` / ``qnms``.
smp's ResNet encoder needs only torchvision's pure-Python model code, so :func:`_torchvision_shim`
declares those two operator schemas (never called here) before the import. It changes nothing
when torchvision's own ops load.
"""
from __future__ import annotations

import torch

_SHIM: list[torch.library.Library] = []


def _torchvision_shim() -> None:
    """Declare ``torchvision::nms`` / ``qnms`` when torchvision's C++ ops are missing."""
    if _SHIM or torch.version.cuda is not None:
        return  # a CUDA torch comes with its matching torchvision, whose C++ ops load and register these
    try:
        torch.ops.torchvision.nms  # noqa: B018 - present when torchvision's ops loaded
        return
    except (AttributeError, RuntimeError):
        pass
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
        try:
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except RuntimeError:
            pass  # already defined
    _SHIM.append(lib)


def smp_unet_resnet34() -> torch.nn.Module:
    """segmentation_models_pytorch ``Unet("resnet34")``, 1 output channel, random weights."""
    _torchvision_shim()
    import segmentation_models_pytorch as smp

    return smp.Unet("resnet34", encoder_weights=None, in_channels=3, classes=1).eval()


def monai_attention_unet() -> torch.nn.Module:
    """MONAI ``AttentionUnet`` with our encoder widths (16-256, 4 downsamplings), random weights."""
    from monai.networks.nets import AttentionUnet

    return AttentionUnet(spatial_dims=2, in_channels=3, out_channels=1, channels=(16, 32, 64, 128, 256),
                         strides=(2, 2, 2, 2)).eval()
