"""GroupNorms with one channel per group, computed in fp32 inside the bf16 model.

PyTorch's channels_last GroupNorm has no vectorised bf16 kernel for one channel per group: it
falls back to a generic path many times slower than the same layer in fp32 (or on NCHW memory).
A model whose full-resolution decoder stage has as many channels as GroupNorm groups (8 and 8)
spends more time there than in its convolutions. Casting the layer's input to fp32 and its output
back to bf16 costs two passes over a narrow tensor, which the fp32 kernel more than repays; the
result is the fp32 GroupNorm of the bf16 activations, closer to the exact model than bf16's own.

The attention gates' GroupNorms are left alone: :mod:`.gate` already runs them on NCHW tensors,
where bf16 is fast. benchmarks/ measures the effect on the whole forward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .gate import ChannelsFirstGate
from .swap import swap_modules


class Fp32GroupNorm(nn.Module):
    """A :class:`torch.nn.GroupNorm`'s function in fp32: (B, C, H, W) in any float dtype -> same
    shape, dtype and memory format. Holds fp32 copies of the layer's affine parameters."""

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        self.num_groups, self.eps = norm.num_groups, norm.eps
        self.weight = nn.Parameter(norm.weight.detach().float().clone(), requires_grad=False) \
            if norm.affine else None
        self.bias = nn.Parameter(norm.bias.detach().float().clone(), requires_grad=False) if norm.affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps).to(x.dtype)


def _narrow_bf16_norm(module: nn.Module) -> bool:
    return (isinstance(module, nn.GroupNorm) and module.num_groups == module.num_channels
            and module.weight is not None and module.weight.dtype == torch.bfloat16)


def use_fp32_narrow_norms(model: nn.Module) -> int:
    """Swap, in place, every bf16 GroupNorm with one channel per group outside the channels-first
    gates for :class:`Fp32GroupNorm`; returns how many. Meant for the bf16 runner's private copy
    (run after :func:`.gate.use_channels_first_gates`)."""
    in_gates = {id(m) for gate in model.modules() if isinstance(gate, ChannelsFirstGate) for m in gate.modules()}
    return swap_modules(model, lambda m: id(m) not in in_gates and _narrow_bf16_norm(m), Fp32GroupNorm)
