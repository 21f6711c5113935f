"""Upsampling and pooling recomputed for the CPU channels_last paths (bf16 and fp32): same function, no weights.

PyTorch's CPU kernels for both vectorise over channels, and the finest decoder/encoder levels have
fewer channels than one 512-bit vector of bf16 holds (``benchmarks/`` section 1 gives the
whole-forward effect):

- Bilinear 2x upsampling: with ``align_corners=False`` every output is a fixed 3:1 blend of two
  neighbours, so the upsampling is two ``lerp`` calls per axis over whole contiguous rows of the
  channels_last memory, which vectorise over the row instead of the channels. Wide, coarse levels
  keep ``F.interpolate``, whose channel vectorisation is full there.
- 2x2 max-pooling: ``max_pool2d`` also writes int64 indices nobody reads; two ``maximum`` calls,
  over row pairs then column pairs, write only the result.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...models.ds_attention_unet import BilinearUpsample
from .swap import swap_modules

# above this many channels the stock kernels vectorise fully over channels
_MAX_CHANNELS = 32


def _blend_pairs(src: torch.Tensor, dst: torch.Tensor, dim: int) -> None:
    """2x linear upsampling of ``src`` along ``dim`` into ``dst``, whose axis ``dim + 1`` (size 2)
    holds each input position's two outputs.

    dst[i, 0] = 0.75 src[i] + 0.25 src[i - 1] and dst[i, 1] = 0.75 src[i] + 0.25 src[i + 1],
    clamped at the borders: PyTorch's half-pixel (``align_corners=False``) weights at scale 2.
    """
    n = src.shape[dim]
    even, odd = dst.select(dim + 1, 0), dst.select(dim + 1, 1)
    torch.lerp(src.narrow(dim, 1, n - 1), src.narrow(dim, 0, n - 1), 0.25, out=even.narrow(dim, 1, n - 1))
    torch.lerp(src.narrow(dim, 0, n - 1), src.narrow(dim, 1, n - 1), 0.25, out=odd.narrow(dim, 0, n - 1))
    even.narrow(dim, 0, 1).copy_(src.narrow(dim, 0, 1))
    odd.narrow(dim, n - 1, 1).copy_(src.narrow(dim, n - 1, 1))


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Bilinear 2x upsampling, ``align_corners=False``.

    Shapes: x (B, C, h, w) channels_last -> (B, C, 2h, 2w) channels_last.
    """
    b, c, h, w = x.shape
    src = x.permute(0, 2, 3, 1)                                       # (B, h, w, C), contiguous
    rows = torch.empty(b, h, w, 2, c, dtype=x.dtype, device=x.device)
    _blend_pairs(src, rows, 2)                                        # along W
    out = torch.empty(b, h, 2, 2 * w, c, dtype=x.dtype, device=x.device)
    _blend_pairs(rows.view(b, h, 2 * w, c), out, 1)                   # along H
    return out.view(b, 2 * h, 2 * w, c).permute(0, 3, 1, 2)


def max_pool2x(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)``. Shapes: (B, C, H, W) channels_last -> (B, C, H/2, W/2) channels_last."""
    b, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(b, h // 2, 2, w * c)
    pairs = torch.maximum(rows[:, :, 0], rows[:, :, 1]).view(b, h // 2, w // 2, 2 * c)
    return torch.maximum(pairs[..., :c], pairs[..., c:]).permute(0, 3, 1, 2)


def _narrow_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.shape[1] <= _MAX_CHANNELS and x.is_contiguous(memory_format=torch.channels_last)


class LerpUpsample(nn.Module):
    """Drop-in for ``BilinearUpsample``: :func:`upsample2x` where it applies, else ``F.interpolate``.

    Shapes: (B, C, h, w), size (H, W) -> (B, C, H, W).
    """

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        h, w = x.shape[-2:]
        if _narrow_channels_last(x) and h > 1 and w > 1 and (size[0], size[1]) == (2 * h, 2 * w):
            return upsample2x(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class PairMaxPool2d(nn.Module):
    """Drop-in for ``nn.MaxPool2d(2)``: :func:`max_pool2x` where it applies.

    Shapes: (B, C, H, W) -> (B, C, H // 2, W // 2).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if _narrow_channels_last(x) and h % 2 == 0 and w % 2 == 0:
            return max_pool2x(x)
        return F.max_pool2d(x, 2)


def _is_pool2x(pool: object) -> bool:
    return isinstance(pool, nn.MaxPool2d) and not pool.ceil_mode and all(
        (v if isinstance(v, tuple) else (v, v)) == want
        for v, want in ((pool.kernel_size, (2, 2)), (pool.stride, (2, 2)), (pool.padding, (0, 0)),
                        (pool.dilation, (1, 1))))


def use_fast_resampling(model: nn.Module) -> int:
    """Swap, in place, every :class:`BilinearUpsample` and every 2x2 ``nn.MaxPool2d``; returns how many.

    Meant for a CPU runner's private channels_last copy of the model; the replacements fall
    back to the stock kernels where their shapes do not apply.
    """
    return (swap_modules(model, lambda m: isinstance(m, BilinearUpsample), lambda m: LerpUpsample())
            + swap_modules(model, _is_pool2x, lambda m: PairMaxPool2d()))
