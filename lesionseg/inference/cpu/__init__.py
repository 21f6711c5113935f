"""The CPU fast path: the model held in bf16, channels_last, frozen by TorchScript (:mod:`.bf16`),
with module rewrites for the shapes PyTorch's CPU kernels handle poorly: attention gates computed
channels-first (:mod:`.gate`), narrow upsampling and pooling as row-wise calls (:mod:`.resample`)
and int8 convolutions below full resolution (:mod:`.int8`). Each rewrite finds its targets by
type (:func:`.swap.swap_modules`) and keeps the model's function and weights."""
from .bf16 import FrozenBF16Runner, cpu_bf16_supported
from .int8 import cpu_int8_supported

__all__ = ["FrozenBF16Runner", "cpu_bf16_supported", "cpu_int8_supported"]
