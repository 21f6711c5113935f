"""An exponential moving average of a model's weights, kept beside training (``--ema-decay``).

Averaging the weights along the end of a run approximates an ensemble of the models passed
through at no cost at inference: one set of weights, one forward pass. Weight averaging is
one of the few training-side changes that has improved accuracy on unseen domains (SWA, SWAD),
which is why the generalization work measures it. The average is what gets validated, chosen
and saved; the raw weights keep training.
"""
from __future__ import annotations

import copy
from typing import Any

import torch

# the effective decay starts low and rises towards the set one, so the first steps (random decoder,
# warming-up learning rate) leave the average quickly instead of lingering in it; it reaches d
# after about (WARMUP_STEPS * d - 1) / (1 - d) steps (0.998: ~4,500), so in a short run the
# warm-up, not d, sets the horizon
WARMUP_STEPS = 10


class WeightAverage:
    """EMA of ``model``'s parameters and floating-point buffers (BatchNorm statistics included);
    integer buffers (BatchNorm's step counters) are copied.

    ``decay`` in [0, 1): the weight of the past at each step once the warm-up has reached it; from
    then on the horizon is about ``1 / (1 - decay)`` optimiser steps (before, it is shorter).
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.steps = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay of the next update: ``min(decay, (1 + n) / (WARMUP_STEPS + n))`` after n updates."""
        return min(self.decay, (1 + self.steps) / (WARMUP_STEPS + self.steps))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average towards ``model``'s current weights (call after each optimiser step)."""
        weight = 1.0 - self.current_decay()
        averaged = self.module.state_dict()
        floats, targets = [], []
        for name, value in model.state_dict().items():
            mine = averaged[name]
            if mine.dtype.is_floating_point:
                floats.append(mine)
                targets.append(value.detach())
            else:
                mine.copy_(value)
        torch._foreach_lerp_(floats, targets, weight)
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "steps": self.steps, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.module.load_state_dict(state["module"])
