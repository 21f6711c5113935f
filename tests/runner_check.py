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
