"""Attention gates recomputed for the CPU channels_last paths (bf16 and fp32): same weights, same function.

Two PyTorch CPU kernels are slow on exactly the shapes the full-resolution gate produces:

- GroupNorm on a channels_last tensor with one channel per group (the gate's intermediate
  channels) takes a slow generic path; on an NCHW tensor it is a fast contiguous reduction. The
  gate's 1x1 convolutions are matrix products, so computing them as ``W @ X^T`` over the
  channels_last memory writes their outputs channels-first at no extra cost, and the GroupNorms,
  the ReLU and the 1x1 ``psi`` projection then run on NCHW tensors.
- The bf16 broadcast multiply ``x * alpha`` over fewer channels than one 512-bit vector holds
  cannot vectorise over channels; over the channel-expanded ``alpha`` it is a plain same-shape
  multiply.

Where neither applies (the coarser gates) the original module runs: there its kernels are fast.
benchmarks/ measures the effect on the whole forward.
"""
from __future__ import annotations

import torch
from torch import nn

from ...models.blocks import AttentionGate
from .swap import swap_modules

# a 512-bit vector holds 32 bf16 values; the broadcast multiply is only slow below that width
_SLOW_BROADCAST_CHANNELS = 32


class ChannelsFirstGate(nn.Module):
    """An :class:`AttentionGate`'s function with its intermediate tensors in NCHW.

    Shapes: x (B, C_x, H, W), g (B, C_g, H, W), both channels_last -> (gated x (B, C_x, H, W)
    channels_last, alpha (B, 1, H, W)). Holds the gate's own parameters (not copies).
    """

    def __init__(self, gate: AttentionGate):
        super().__init__()
        self.w_x, self.norm_x = gate.w_x[0], gate.w_x[1]
        self.w_g, self.norm_g = gate.w_g[0], gate.w_g[1]
        self.psi = gate.psi

    @staticmethod
    def _project(conv: nn.Conv2d, t: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) channels_last is a (B*H*W, C) matrix in memory; W (C_out, C) times its
        # transpose is (C_out, B*H*W): channels-first output with no layout copy (a batched matmul
        # over (B, C, H*W) views would copy the transposed operand first)
        b, c, h, w = t.shape
        flat = t.permute(0, 2, 3, 1).reshape(b * h * w, c)
        return torch.mm(conv.weight.flatten(1), flat.t()).view(-1, b, h, w).transpose(0, 1)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        s = torch.relu(self.norm_x(self._project(self.w_x, x)) + self.norm_g(self._project(self.w_g, g)))
        logit = torch.matmul(self.psi.weight.flatten(1), s.flatten(2)) + self.psi.bias.view(1, -1, 1)
        alpha = torch.sigmoid(logit).view(b, 1, h, w)
        if c < _SLOW_BROADCAST_CHANNELS:
            return x * alpha.expand(b, c, h, w).contiguous(memory_format=torch.channels_last), alpha
        return x * alpha, alpha


def _one_channel_per_group(norm: nn.Module) -> bool:
    return isinstance(norm, nn.GroupNorm) and norm.num_groups == norm.num_channels


def _slow_on_cpu(gate: nn.Module) -> bool:
    return isinstance(gate, AttentionGate) and (_one_channel_per_group(gate.w_x[1])
                                                or _one_channel_per_group(gate.w_g[1]))


def use_channels_first_gates(model: nn.Module) -> int:
    """Swap, in place, every :class:`AttentionGate` whose GroupNorms have one channel per group;
    returns how many. Meant for a CPU runner's private channels_last copy of the model."""
    return swap_modules(model, _slow_on_cpu, ChannelsFirstGate)
