"""The CPU fast path: the model held in bfloat16, channels_last, frozen by TorchScript.

bf16 autocast re-casts the fp32 weights and casts activations around every convolution on every
call; holding the weights in bf16 removes that, and freezing a trace pre-packs the oneDNN
convolution weights once instead of per call. A trace takes a fraction of a second, where
``torch.compile`` compiles for tens of seconds, so a process that predicts one image still gains.
The full-resolution attention gate is recomputed with its intermediates channels-first
(:mod:`.gate`), and the narrow upsampling and pooling as row-wise lerp / maximum calls
(:mod:`.resample`): PyTorch's channels_last bf16 kernels for them vectorise over channels, and these
levels have fewer channels than one vector holds. benchmarks/ measures each step.

The trace is taken at one spatial size (the model's ``inference_img_size``, which the Predictor
always feeds); the batch size may vary. Any other size runs the same bf16 weights eagerly, because
the model's pad-to-stride step is Python control flow that a trace would freeze at one size.
"""
from __future__ import annotations

import copy
import logging
import threading
import warnings

import torch

from .gate import use_channels_first_gates
from .int8 import cpu_int8_supported, use_int8_convs
from .resample import use_fast_resampling

log = logging.getLogger(__name__)


def cpu_bf16_supported() -> bool:
    """True where this CPU runs bf16 matrix products natively (avx512_bf16 / AMX)."""
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(check and check())


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


class FrozenBF16Runner:
    """(B, 3, S, S) float32 normalised -> (B, 1, S, S) float32 logits, computed in bf16.

    ``int8=True`` also runs the 3x3 convolutions below full resolution in int8 (:mod:`.int8`) where
    the CPU supports it; ``int8_convs`` says how many were swapped.

    ``model`` is copied; the caller's fp32 model is left as it was (the ``--no-fast`` path and the
    training code use it). Thread-safe: the trace is built once, under a lock, on first use.
    """

    def __init__(self, model: torch.nn.Module, img_size: int, int8: bool = False):
        self.size = int(img_size)
        self.eager = copy.deepcopy(model).eval().to(torch.bfloat16).to(memory_format=torch.channels_last)
        encoder = getattr(self.eager, "encoder", None)
        self.fp32_encoder = encoder is not None and _has_batchnorm(encoder)
        if self.fp32_encoder:
            self.eager.encoder = Fp32Encoder(copy.deepcopy(model.encoder).eval())
        self.gates_swapped = use_channels_first_gates(self.eager)
        self.resampling_swapped = use_fast_resampling(self.eager)
        # int8 only where the CPU has int8 dot products: without them oneDNN's int8 kernels have no
        # faster instructions to use than bf16's
        # nor beside an fp32 encoder: the decoder's low-resolution convolutions are then too small a
        # share of the work for int8 to pay for its quantisation, and it adds drift from fp32
        use_int8 = int8 and cpu_int8_supported() and not self.fp32_encoder
        self.int8_convs = use_int8_convs(self.eager) if use_int8 else 0
        self.name = ("fp32 encoder + " if self.fp32_encoder else "") + ("bf16 + int8" if self.int8_convs else "bf16")
        self.side_by_side = True
        self._frozen: torch.jit.ScriptModule | None = None
        self._tried = False
        self._lock = threading.Lock()

    def _trace(self) -> None:
        with self._lock:
            if self._tried:
                return
            example = torch.zeros(1, 3, self.size, self.size, dtype=torch.bfloat16)
            example = example.contiguous(memory_format=torch.channels_last)
            try:
                with warnings.catch_warnings():
                    # torch.jit is marked deprecated in favour of torch.compile, whose compilation per
                    # process costs more than a whole batch here; the trace's size-specific control flow is handled
                    # by calling it only at the traced size
                    warnings.simplefilter("ignore")
                    with torch.inference_mode():
                        self._frozen = torch.jit.freeze(torch.jit.trace(self.eager, example, check_trace=False))
            except Exception as e:  # noqa: BLE001 - any tracing failure leaves the eager bf16 path working
                log.warning("TorchScript freeze unavailable (%s); running the bf16 model eagerly", e)
            self._tried = True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        if not self._tried:
            self._trace()
        module = self._frozen if self._frozen is not None and tuple(x.shape[-2:]) == (self.size, self.size) \
            else self.eager
        with torch.inference_mode():
            return module(x).float()
