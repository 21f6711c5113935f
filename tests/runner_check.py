"""Shared check for the CPU runner's rewrites: its output against the fp32 model it was built from."""
from __future__ import annotations

from typing import Iterable

import torch


def assert_runner_matches(runner, model: torch.nn.Module, inputs: Iterable[torch.Tensor],
                          max_prob_diff: float) -> None:
    """For each (B, 3, H, W) input: same logit shape, >99% of pixels on the same side of 0, and
    probabilities within ``max_prob_diff`` of the fp32 model's."""
    for x in inputs:
        with torch.no_grad():
            ref = model(x)
        out = runner(x)
        assert out.shape == ref.shape
        assert ((out > 0) == (ref > 0)).float().mean() > 0.99
        assert (torch.sigmoid(out) - torch.sigmoid(ref)).abs().max() < max_prob_diff


def assert_computes_the_eager_model(runner, model: torch.nn.Module) -> None:
    """An fp32 runner against the model at its compiled / exported size (1, 3, 64, 64), another
    batch size and a size it runs eagerly: float32 logits of the same shape, equal to rounding."""
    for shape in [(1, 3, 64, 64), (3, 3, 64, 64), (1, 3, 50, 70)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = model(x)
        out = runner(x)
        assert out.dtype == torch.float32 and out.shape == ref.shape
        torch.testing.assert_close(out, ref, atol=2e-4, rtol=1e-4)
