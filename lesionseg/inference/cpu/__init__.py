"""The CPU fast paths. Where openvino is installed, on every x86 CPU class: OpenVINO with the
decoder's 3x3 convolutions in int8 (:mod:`.openvino`, calibration in :mod:`.qdq`). Without it (or with
LESIONSEG_OPENVINO=0) chosen per CPU capability (:mod:`lesionseg.utils.cpu_isa`, which follows the ISA caps
ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA): where bf16 is native, the model held in bf16 (:mod:`.bf16`);
elsewhere in fp32 through ONNX Runtime (:mod:`.ort`), or, without it, the frozen fp32 trace (:mod:`.fp32`);
the bf16 and fp32 traces are channels_last and frozen by TorchScript (:mod:`.frozen`),
with module rewrites for the shapes PyTorch's CPU kernels handle poorly: attention gates computed
channels-first (:mod:`.gate`), narrow upsampling and pooling as row-wise calls (:mod:`.resample`)
and, on the bf16 path, GroupNorms with one channel per group in fp32 (:mod:`.norm`) and int8
convolutions below full resolution (:mod:`.int8`). Each rewrite finds
its targets by type (:func:`.swap.swap_modules`) and keeps the model's function and weights."""
from ...utils.cpu_isa import cpu_bf16_supported, describe
from .bf16 import FrozenBF16Runner
from .fp32 import FrozenFp32Runner
from .frozen import FrozenRunner
from .int8 import cpu_int8_supported
from .openvino import OpenVinoRunner
from .ort import OnnxFp32Runner

__all__ = ["FrozenBF16Runner", "FrozenFp32Runner", "FrozenRunner", "OnnxFp32Runner", "OpenVinoRunner",
           "cpu_bf16_supported", "cpu_int8_supported", "describe"]
