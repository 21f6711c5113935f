"""The CPU fast path where bf16 is native: the model held in bfloat16, channels_last, frozen (frozen.py).

bf16 autocast re-casts the fp32 weights and casts activations around every convolution on every
call; holding the weights in bf16 removes that. The full-resolution attention gate is recomputed
with its intermediates channels-first (:mod:`.gate`), and the narrow upsampling and pooling as
row-wise lerp / maximum calls (:mod:`.resample`): PyTorch's channels_last bf16 kernels for them
vectorise over channels, and these levels have fewer channels than one vector holds. For the same
reason GroupNorms with one channel per group run in fp32 (:mod:`.norm`). benchmarks/
measures each step. Where bf16 is not native, :mod:`.fp32` is the fast path.
"""
from __future__ import annotations

import copy

import torch

from ...utils.cpu_isa import cpu_bf16_supported
from .frozen import FrozenRunner
from .gate import use_channels_first_gates
from .int8 import cpu_int8_supported, use_int8_convs
from .norm import use_fp32_narrow_norms
from .resample import use_fast_resampling

__all__ = ["FrozenBF16Runner", "Fp32Encoder", "cpu_bf16_supported"]


class Fp32Encoder(torch.nn.Module):
    """Runs an encoder in fp32 inside the bf16 model: (B, 3, S, S) bf16 -> its features in bf16.

    A pretrained encoder's inverted-residual stream (BatchNorm folded into its convolutions, linear
    bottlenecks added block after block) loses too much when every block is rounded to bf16: masks
    then drift from fp32 on images unlike the training data. In fp32 the encoder stays exact while
    the decoder, where the full-resolution work is, keeps the bf16 speed."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder.float().to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [f.to(torch.bfloat16) for f in self.encoder(x.float())]


def _has_batchnorm(module: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())


class FrozenBF16Runner(FrozenRunner):
    """(B, 3, S, S) float32 normalised -> (B, 1, S, S) float32 logits, computed in bf16.

    ``int8=True`` also runs the 3x3 convolutions below full resolution in int8 (:mod:`.int8`) where
    the CPU supports it; ``int8_convs`` says how many were swapped.

    ``model`` is copied; the caller's fp32 model is left as it was (the ``--no-fast`` path and the
    training code use it).
    """

    def __init__(self, model: torch.nn.Module, img_size: int, int8: bool = False):
        eager = copy.deepcopy(model).eval().to(torch.bfloat16).to(memory_format=torch.channels_last)
        encoder = getattr(eager, "encoder", None)
        self.fp32_encoder = encoder is not None and _has_batchnorm(encoder)
        if self.fp32_encoder:
            eager.encoder = Fp32Encoder(copy.deepcopy(model.encoder).eval())
        self.gates_swapped = use_channels_first_gates(eager)
        self.norms_swapped = use_fp32_narrow_norms(eager)
        self.resampling_swapped = use_fast_resampling(eager)
        # int8 only where the CPU has int8 dot products: without them oneDNN's int8 kernels have no
        # faster instructions to use than bf16's
        # nor beside an fp32 encoder: the decoder's low-resolution convolutions are then too small a
        # share of the work for int8 to pay for its quantisation, and it adds drift from fp32
        use_int8 = int8 and cpu_int8_supported() and not self.fp32_encoder
        int8_convs = use_int8_convs(eager) if use_int8 else 0
        name = ("fp32 encoder + " if self.fp32_encoder else "") + ("bf16 + int8" if int8_convs else "bf16")
        super().__init__(eager, img_size, torch.bfloat16, name)
        self.int8_convs = int8_convs
