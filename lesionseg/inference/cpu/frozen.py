"""A private copy of the model, channels_last, frozen by a TorchScript trace: the CPU fast paths' shared core.

Freezing a trace folds BatchNorm into the convolutions before it and pre-packs oneDNN's
convolution weights once instead of per call; a trace takes a fraction of a second, where
``torch.compile`` compiles for tens of seconds, so a process that predicts one image still gains.

The trace is taken at one spatial size (the model's ``inference_img_size``, which the Predictor
always feeds); the batch size may vary. Any other size runs the same private copy eagerly, because
the model's pad-to-stride step is Python control flow that a trace would freeze at one size.
"""
from __future__ import annotations

import logging
import threading
import warnings

import torch

log = logging.getLogger(__name__)


class FrozenRunner:
    """(B, C_in, S, S) float32 normalised (C_in 3, or 6 for the click refiner) -> (B, 1, S, S)
    float32 logits through ``eager`` (a private, eval-mode, channels_last copy of the model that
    takes its input in ``dtype``).

    Thread-safe: the trace is built once, under a lock, on first use. Subclasses prepare ``eager``
    and pass it with their ``name``; ``int8_convs`` counts convolutions computed in int8.
    """

    side_by_side = True
    int8_convs = 0

    def __init__(self, eager: torch.nn.Module, img_size: int, dtype: torch.dtype, name: str):
        self.eager, self.size, self.dtype, self.name = eager, int(img_size), dtype, name
        self._frozen: torch.jit.ScriptModule | None = None
        self._tried = False
        self._lock = threading.Lock()

    def _trace(self) -> None:
        with self._lock:
            if self._tried:
                return
            channels = int(getattr(self.eager, "in_channels", 3))
            example = torch.zeros(1, channels, self.size, self.size, dtype=self.dtype)
            example = example.contiguous(memory_format=torch.channels_last)
            try:
                with warnings.catch_warnings():
                    # torch.jit is marked deprecated in favour of torch.compile, whose compilation per
                    # process costs more than a whole batch here; the trace's size-specific control
                    # flow is handled by calling it only at the traced size
                    warnings.simplefilter("ignore")
                    with torch.inference_mode():
                        self._frozen = torch.jit.freeze(torch.jit.trace(self.eager, example, check_trace=False))
            except Exception as e:  # noqa: BLE001 - any tracing failure leaves the eager copy working
                log.warning("TorchScript freeze unavailable (%s); running the %s copy eagerly", e, self.name)
            self._tried = True

    @property
    def ready(self) -> bool:
        """True once the trace was built (or tried): the first call has been paid."""
        return self._tried

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        if not self._tried:
            self._trace()
        module = self._frozen if self._frozen is not None and tuple(x.shape[-2:]) == (self.size, self.size) \
            else self.eager
        with torch.inference_mode():
            return module(x).float()
