#!/usr/bin/env bash
# Run a command as on an AVX2-only CPU (no AVX-512, AMX, VNNI, bf16) on a bigger x86 CPU:
#   scripts/as_avx2.sh python -m benchmarks
# Every library then picks its AVX2 kernels from CPUID (torch, oneDNN, MKL, ONNX Runtime), where
# ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 cap torch and oneDNN only. Needs a C compiler
# and Linux CPUID faulting (cpuid_fault in /proc/cpuinfo); see scripts/avx2/avx2_cpuid.c.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$here/avx2/avx2_cpuid.c
if ! grep -qw cpuid_fault /proc/cpuinfo 2>/dev/null; then
    echo "as_avx2.sh: this CPU or kernel has no CPUID faulting (no cpuid_fault in /proc/cpuinfo); use ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 instead" >&2
    exit 2
fi
cache=${XDG_CACHE_HOME:-$HOME/.cache}/lesionseg
so=$cache/avx2_cpuid-$(sha256sum "$src" | cut -c1-12).so
if [ ! -f "$so" ]; then
    compiler=$(command -v cc || command -v gcc || true)
    if [ -z "$compiler" ]; then
        echo "as_avx2.sh: no C compiler (cc); install one, e.g. apt-get install gcc" >&2
        exit 2
    fi
    mkdir -p "$cache"
    "$compiler" -O2 -shared -fPIC -o "$so.tmp.$$" "$src" -ldl
    mv "$so.tmp.$$" "$so"
fi
export LD_PRELOAD="$so${LD_PRELOAD:+:$LD_PRELOAD}"
# glibc chose its string functions before the shim was loaded: keep those off AVX-512 too
export GLIBC_TUNABLES="glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD${GLIBC_TUNABLES:+:$GLIBC_TUNABLES}"
exec "$@"
