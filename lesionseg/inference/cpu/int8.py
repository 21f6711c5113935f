"""Dynamic int8 convolutions for the CPU fast path, below full resolution.

On a CPU with int8 dot-product instructions (AVX512-VNNI or AMX), oneDNN's u8 x s8
convolution runs the model's 3x3 convolutions faster than bf16. Only the convolutions whose input
is at most half the model's resolution are swapped: there the quantisation of the input is cheap
next to the convolution it saves; at full resolution, with few channels, quantising the input
costs what the int8 convolution saves, so those keep bf16.

- Weights: symmetric int8 per output channel (scale = max |w| / 127), packed once.
- Inputs: asymmetric uint8 per image, from that image's own min and max at this layer ("dynamic"
  quantisation), so there is no calibration set to ship or to go stale, and an image's mask does
  not depend on the other images in its batch.
- Outputs: dequantised by oneDNN straight to the input's dtype (bf16): the accumulation is exact
  int32, so the only added error is the inputs' and weights' 8-bit rounding.

docs/model.md compares the held-out metrics with exact fp32; benchmarks/ section 1 checks mask
agreement on every run. ``--no-int8`` turns it off.

The operator is registered as ``torch.ops.lesionseg.qconv2d_dynamic`` so that the TorchScript trace
of the runner records one call per convolution (the oneDNN op's own schema cannot be traced).
"""
from __future__ import annotations

import functools
import logging
import math
import warnings

import torch
from torch import nn

from ...utils.cpu_isa import cpu_int8_dot_supported

log = logging.getLogger(__name__)

with warnings.catch_warnings():
    # quantized tensor creation is marked deprecated (a C++ warn-once); it is the one vectorised
    # float -> uint8 kernel in this torch (a clamp/round chain is several passes), so the warning is
    # spent here, once, instead of wrapping every call (warnings.catch_warnings is not thread-safe)
    warnings.simplefilter("ignore")
    torch.quantize_per_tensor(torch.zeros(1), 1.0, 0, torch.quint8)


def _quantize_u8(x: torch.Tensor) -> tuple[torch.Tensor, float, int] | None:
    """(1, C, H, W) float32 -> (uint8 tensor, same shape and strides; scale; zero point), or None
    where the input holds NaN or inf (no finite scale exists)."""
    # the range always includes 0: oneDNN pads with the zero point, which must stand for exactly 0.
    # Two reductions, because torch.aminmax takes a slower generic path for these shapes.
    lo, hi = min(float(x.amin()), 0.0), max(float(x.amax()), 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    scale = max(hi - lo, 1e-8) / 255.0
    zero = min(255, max(0, round(-lo / scale)))
    return torch.quantize_per_tensor(x, scale, zero, torch.quint8).view(torch.uint8), scale, zero


def _qconv2d_dynamic(x: torch.Tensor, packed: torch.Tensor, w_scale: torch.Tensor, w_zero: torch.Tensor,
                     bias: torch.Tensor | None, padding: list[int]) -> torch.Tensor:
    # oneDNN's kernel reads the input as channels_last whatever its strides say (NCHW crashes it)
    x = x.contiguous(memory_format=torch.channels_last)
    c_out, _, kh, kw = packed.shape
    out_shape = (1, c_out, x.shape[2] + 2 * padding[0] - kh + 1, x.shape[3] + 2 * padding[1] - kw + 1)
    if x.shape[0] == 0:
        return x.new_empty((0, *out_shape[1:])).contiguous(memory_format=torch.channels_last)
    outs = []
    for sample in x.split(1):  # one scale per image
        quantized = _quantize_u8(sample.float())
        if quantized is None:  # as in the float model, where the next GroupNorm spreads it to every pixel
            nan = torch.full(out_shape, float("nan"), dtype=x.dtype)
            outs.append(nan.contiguous(memory_format=torch.channels_last))
            continue
        q, scale, zero = quantized
        outs.append(torch.ops.onednn.qconv2d_pointwise(
            q, scale, zero, packed, w_scale, w_zero, bias, [1, 1], padding, [1, 1], 1,
            1.0, 0, x.dtype, "none", [], ""))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _register() -> torch.library.Library | None:
    """Define ``torch.ops.lesionseg.qconv2d_dynamic`` once per process (a re-import finds it)."""
    try:
        torch.ops.lesionseg.qconv2d_dynamic  # noqa: B018 - the lookup raises where it is undefined
        return None
    except (AttributeError, RuntimeError):
        pass
    lib = torch.library.Library("lesionseg", "FRAGMENT")
    lib.define("qconv2d_dynamic(Tensor x, Tensor packed, Tensor w_scale, Tensor w_zero, Tensor? bias, "
               "int[] padding) -> Tensor")
    # one kernel for every backend key: the packed weight is an MKLDNN tensor, so dispatch lands on MkldnnCPU
    lib.impl("qconv2d_dynamic", _qconv2d_dynamic, "CompositeExplicitAutograd")
    return lib


_LIB = _register()


@functools.lru_cache(maxsize=1)
def cpu_int8_supported() -> bool:
    """True where this CPU has int8 dot products (VNNI or AMX) usable by this process's kernels (see
    lesionseg.utils.cpu_isa) and this torch has oneDNN's quantised conv."""
    ops = getattr(torch.ops, "onednn", None)
    if not (torch.backends.mkldnn.is_available() and hasattr(ops, "qconv_prepack")
            and hasattr(ops, "qconv2d_pointwise")):
        return False
    return cpu_int8_dot_supported()


def _computable(conv: nn.Conv2d) -> bool:
    return (conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple))  # not "same"/"valid"


class Int8Conv2d(nn.Module):
    """An ``nn.Conv2d`` (stride 1, dilation 1, one group) with int8 weights and per-image int8 inputs.

    Shapes: (B, C_in, H, W) channels_last, float32 or bf16 -> (B, C_out, H, W), same dtype.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if not _computable(conv):
            raise ValueError(f"Int8Conv2d takes stride 1, dilation 1, one group, zero padding given as "
                             f"numbers; got {conv}")
        w = conv.weight.detach().float()
        scale = (w.abs().amax(dim=(1, 2, 3)) / 127.0).clamp_min(1e-12)
        q = torch.round(w / scale.view(-1, 1, 1, 1)).clamp(-127, 127).to(torch.int8)
        self.padding = [int(p) for p in conv.padding]
        # the input scale and zero point given to the packing (1.0, 0) are placeholders: oneDNN
        # takes each image's own at run time
        packed = torch.ops.onednn.qconv_prepack(q.contiguous(memory_format=torch.channels_last), scale, 1.0, 0,
                                                [1, 1], self.padding, [1, 1], 1, None)
        self.register_buffer("packed", packed, persistent=False)
        self.register_buffer("w_scale", scale, persistent=False)
        self.register_buffer("w_zero", torch.zeros(w.shape[0], dtype=torch.int64), persistent=False)
        bias = None if conv.bias is None else conv.bias.detach().float()
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.lesionseg.qconv2d_dynamic(x, self.packed, self.w_scale, self.w_zero, self.bias,
                                                   self.padding)


def _eligible(conv: nn.Module) -> bool:
    return isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and _computable(conv)


def use_int8_convs(model: nn.Module, probe_size: int = 64) -> int:
    """Swap, in place, the 3x3 convolutions whose input is at most half the model's input size.

    Which ones is found by one forward at ``probe_size`` px with hooks (sizes scale with the input).
    Meant for the CPU runner's private copy; returns how many were swapped.
    """
    param = next(model.parameters(), None)
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if param is None or first is None:
        return 0
    sizes: dict[str, int] = {}

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            sizes.setdefault(name, inputs[0].shape[-1])
        return hook

    hooks = [mod.register_forward_hook(record(name)) for name, mod in model.named_modules() if _eligible(mod)]
    try:
        probe = torch.zeros(1, first.in_channels, probe_size, probe_size, dtype=param.dtype)
        with torch.inference_mode():
            model(probe.contiguous(memory_format=torch.channels_last))
    finally:
        for h in hooks:
            h.remove()
    names = [n for n, s in sizes.items() if s <= probe_size // 2]
    for name in names:
        parent, _, leaf = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, leaf, Int8Conv2d(getattr(owner, leaf)))
    log.debug("int8 convolutions: %d of %d eligible", len(names), len(sizes))
    return len(names)
