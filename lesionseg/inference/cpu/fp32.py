"""The CPU fast path where bf16 is not native (AVX2-class CPUs, or with the ISA caps of lesionseg.utils.cpu_isa).

fp32 arithmetic (BatchNorm folded and oneDNN's kernels instead of the eager ones: agreement with
the eager model to rounding, which tests/test_cpu_paths.py checks), with what makes fp32 cheaper on such CPUs: channels_last memory (oneDNN's
convolutions need no layout reorder per call), a frozen trace (BatchNorm folded, weights pre-packed;
see frozen.py), and the gate and resampling rewrites, which keep the narrow full-resolution levels
off PyTorch's channel-vectorised kernels. No int8: int8 belongs to the bf16 path, for CPUs with int8
dot products; without them oneDNN's int8 convolutions gain too little for the drift they add.
benchmarks/ compares the whole path with the eager model.
"""
from __future__ import annotations

import copy

import torch

from .frozen import FrozenRunner
from .gate import use_channels_first_gates
from .resample import use_fast_resampling


class FrozenFp32Runner(FrozenRunner):
    """(B, 3, S, S) float32 normalised -> (B, 1, S, S) float32 logits, fp32 throughout.

    ``model`` is copied; the caller's model is left as it was (the ``--no-fast`` path and the
    training code use it).
    """

    def __init__(self, model: torch.nn.Module, img_size: int):
        eager = copy.deepcopy(model).eval().float().to(memory_format=torch.channels_last)
        self.gates_swapped = use_channels_first_gates(eager)
        self.resampling_swapped = use_fast_resampling(eager)
        super().__init__(eager, img_size, torch.float32, "fp32 channels_last")
