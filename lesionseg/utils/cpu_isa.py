"""Which instruction sets this process's torch and oneDNN kernels may use, as opposed to what the chip has.

``torch.cpu._is_*_supported`` read the chip's flags. ``ATEN_CPU_CAPABILITY`` caps the ISA of
torch's own kernels and ``ONEDNN_MAX_CPU_ISA`` (or ``DNNL_MAX_CPU_ISA``) caps oneDNN's, so a bf16
machine can behave like an AVX2-only one. A path that relies on bf16 or int8 dot products is only
fast where both the chip has them and the caps let the kernels use them; choosing by the chip alone
would run the bf16 path on emulated kernels, so every check here follows the caps too.
"""
from __future__ import annotations

import os

import torch

# oneDNN's ISA names from the least to the most capable (its documented ONEDNN_MAX_CPU_ISA values)
ONEDNN_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
               "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10_1_512_AMX",
               "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16")


def torch_capability() -> str:
    """The ISA torch's own kernels run with: "AVX512", "AVX2", "DEFAULT", ... (follows ATEN_CPU_CAPABILITY)."""
    return str(torch.backends.cpu.get_cpu_capability())


def onednn_isa_cap() -> str | None:
    """The cap set by ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA (upper case), or None where none is set.

    oneDNN reads the variable once, at its first use in the process: set it before starting Python."""
    value = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    value = value.strip().upper()
    return value if value and value not in ("ALL", "DEFAULT") else None


def onednn_allows(isa: str) -> bool:
    """True unless the oneDNN cap is set below ``isa`` (an ONEDNN_ISAS name); an unknown cap allows all."""
    cap = onednn_isa_cap()
    if cap is None or cap not in ONEDNN_ISAS:
        return True
    return ONEDNN_ISAS.index(cap) >= ONEDNN_ISAS.index(isa)


def _chip_has(*names: str) -> bool:
    checks = [getattr(torch.cpu, name, None) for name in names]
    return any(bool(check()) for check in checks if check is not None)


def cpu_fp32_fast_supported() -> bool:
    """True where the frozen channels_last fp32 path applies: x86 with oneDNN (AVX2 or AVX-512 kernels).
    Elsewhere (ARM, no oneDNN) that path was never measured, and the eager model is used."""
    return torch.backends.mkldnn.is_available() and torch_capability() in ("AVX2", "AVX512")


def cpu_bf16_supported() -> bool:
    """True where bf16 matrix products run natively here: the chip has avx512_bf16 and neither
    torch's nor oneDNN's kernels are capped below it."""
    return (_chip_has("_is_avx512_bf16_supported") and torch_capability().startswith("AVX512")
            and onednn_allows("AVX512_CORE_BF16"))


def cpu_int8_dot_supported() -> bool:
    """True where int8 dot products (AVX512-VNNI or AMX) run natively here, caps included."""
    return (_chip_has("_is_vnni_supported", "_is_amx_tile_supported") and torch_capability().startswith("AVX512")
            and onednn_allows("AVX512_CORE_VNNI"))


def describe() -> str:
    """One line for logs and benchmark tables, e.g. ``torch AVX2, oneDNN cap AVX2, bf16 no, int8 dot no``."""
    cap = onednn_isa_cap() or "none"
    yes = {True: "yes", False: "no"}
    return (f"torch {torch_capability()}, oneDNN cap {cap}, bf16 {yes[cpu_bf16_supported()]}, "
            f"int8 dot {yes[cpu_int8_dot_supported()]}")
