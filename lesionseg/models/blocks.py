"""Building blocks of DS-AttentionUNet: conv blocks and additive attention gates."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "leaky_relu": nn.LeakyReLU}


def make_activation(name: str) -> nn.Module:
    """Return a fresh activation module by name; raises ValueError listing the valid names."""
    try:
        cls = ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; valid: {sorted(ACTIVATIONS)}") from None
    return cls(inplace=True) if cls in (nn.ReLU, nn.SiLU, nn.LeakyReLU) else cls()


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``groups`` that divides ``channels``.

    GroupNorm's statistics are per sample, so the model behaves the same at batch size 1.
    """
    g = max(1, min(groups, channels))
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels)


class ConvBlock(nn.Sequential):
    """(conv 3x3 -> GroupNorm -> activation) x 2. Shapes: (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_ch: int, out_ch: int, norm_groups: int, activation: str, dropout: float = 0.0):
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
            group_norm(out_ch, norm_groups),
            make_activation(activation),
        ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        layers += [
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            group_norm(out_ch, norm_groups),
            make_activation(activation),
        ]
        super().__init__(*layers)


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al., 2018, "Attention U-Net").

    The gating signal ``g`` comes from the coarser decoder level (already upsampled to the skip's
    resolution); the coefficients ``alpha = sigmoid(psi(relu(W_g g + W_x x)))`` in [0, 1] scale
    the skip features ``x`` so that the decoder ignores skin, hair and ruler marks the coarse
    context says are not lesion.

    Shapes: x (B, C_x, H, W), g (B, C_g, H, W) -> (gated x (B, C_x, H, W), alpha (B, 1, H, W)).
    """

    def __init__(self, x_channels: int, g_channels: int, inter_channels: int, norm_groups: int):
        super().__init__()
        self.w_x = nn.Sequential(nn.Conv2d(x_channels, inter_channels, 1, bias=False),
                                 group_norm(inter_channels, norm_groups))
        self.w_g = nn.Sequential(nn.Conv2d(g_channels, inter_channels, 1, bias=False),
                                 group_norm(inter_channels, norm_groups))
        self.psi = nn.Conv2d(inter_channels, 1, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = torch.sigmoid(self.psi(self.act(self.w_x(x) + self.w_g(g))))
        return x * alpha, alpha


def tapped(layers: Sequence[nn.Module], taps: Sequence[int], x: torch.Tensor) -> list[torch.Tensor]:
    """Run ``layers`` in order on ``x``, keeping the output after ``layers[:k]`` for each k in ``taps``."""
    feats, start = [], 0
    for stop in taps:
        for layer in layers[start:stop]:
            x = layer(x)
        feats.append(x)
        start = stop
    return feats


def widen_input(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A pretrained first convolution's (C_out, C_in, k, k) weight with zeros for the input channels
    past C_in up to ``in_channels``: a click-conditioned model then starts out computing what the
    pretrained RGB network does."""
    extra = in_channels - weight.shape[1]
    if extra <= 0:
        return weight
    return torch.cat([weight, weight.new_zeros(weight.shape[0], extra, *weight.shape[2:])], dim=1)
