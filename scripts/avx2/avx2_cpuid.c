/* LD_PRELOAD shim: this process (and what it starts) sees an AVX2-only x86 CPU in CPUID: no AVX-512,
 * AMX, AVX-VNNI, AVX-512 bf16 / VNNI / FP16, as on an AMD Zen 3 or most laptops.
 *
 * Why: ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA cap torch's and oneDNN's kernels only; MKL, ONNX
 * Runtime and any other library read CPUID themselves and would still run AVX-512 code on a bigger
 * CPU. Linux CPUID faulting (arch_prctl ARCH_SET_CPUID, flag "cpuid_fault" in /proc/cpuinfo) makes
 * every CPUID instruction trap; the SIGSEGV handler below runs the real one with faulting briefly
 * off, clears the masked feature bits and resumes after the instruction. Faulting is inherited by
 * threads and forks and reset by execve, where LD_PRELOAD loads this again.
 *
 * Other SIGSEGV handlers (Python's faulthandler, a JIT, a compiler's crash reporter) are kept behind
 * this one: sigaction() and signal() for SIGSEGV are interposed, record theirs and leave this one
 * installed; a fault that is not a CPUID goes to theirs, or to the default action.
 *
 * Build: cc -O2 -shared -fPIC -o avx2_cpuid.so avx2_cpuid.c -ldl (scripts/as_avx2.sh does). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define ARCH_SET_CPUID 0x1012

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);
static sigaction_fn real_sigaction;
static struct sigaction chained; /* the SIGSEGV action the program asked for */
static int faulting_on;

static void real_cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

static void mask(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    if (leaf == 7 && sub == 0) {
        /* EBX: AVX512F 16, DQ 17, IFMA 21, PF 26, ER 27, CD 28, BW 30, VL 31 */
        r[1] &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) | (1u << 31));
        /* ECX: VBMI 1, VBMI2 6, GFNI 8, VNNI 11, BITALG 12, VPOPCNTDQ 14 */
        r[2] &= ~((1u << 1) | (1u << 6) | (1u << 8) | (1u << 11) | (1u << 12) | (1u << 14));
        /* EDX: 4VNNIW 2, 4FMAPS 3, VP2INTERSECT 8, AMX-BF16 22, AVX512-FP16 23, AMX-TILE 24, AMX-INT8 25 */
        r[3] &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25));
    } else if (leaf == 7 && sub == 1) {
        /* EAX: AVX-VNNI 4, AVX512-BF16 5, AMX-FP16 21, AVX-IFMA 23; EDX: AVX-VNNI-INT8 4, AVX-NE-CONVERT 5, AVX10 19 */
        r[0] &= ~((1u << 4) | (1u << 5) | (1u << 21) | (1u << 23));
        r[3] &= ~((1u << 4) | (1u << 5) | (1u << 19));
    } else if (leaf == 0x1d || leaf == 0x1e || leaf == 0x24) {
        r[0] = r[1] = r[2] = r[3] = 0; /* AMX tile and AVX10 leaves */
    }
}

static void on_segv(int sig, siginfo_t *info, void *ctx) {
    ucontext_t *uc = (ucontext_t *)ctx;
    /* a trapped CPUID arrives as SI_KERNEL at the instruction itself (0F A2); only then is the
     * instruction pointer read */
    const uint8_t *ip = (const uint8_t *)uc->uc_mcontext.gregs[REG_RIP];
    if (info->si_code != SI_KERNEL || ip == NULL || ip[0] != 0x0f || ip[1] != 0xa2) {
        /* not a trapped CPUID: the program's own handler, else the default action */
        if ((chained.sa_flags & SA_SIGINFO) && chained.sa_sigaction != NULL) {
            chained.sa_sigaction(sig, info, ctx);
        } else if (chained.sa_handler == SIG_IGN) {
            return;
        } else if (chained.sa_handler != SIG_DFL && chained.sa_handler != NULL) {
            chained.sa_handler(sig);
        } else {
            struct sigaction dfl;
            memset(&dfl, 0, sizeof dfl);
            dfl.sa_handler = SIG_DFL;
            real_sigaction(SIGSEGV, &dfl, NULL);
            /* a fault re-runs its instruction on return and gets the default action; a signal
             * sent by kill() or raise() is raised again for it */
            if (info->si_code <= 0) raise(sig);
        }
        return;
    }
    uint32_t leaf = (uint32_t)uc->uc_mcontext.gregs[REG_RAX], sub = (uint32_t)uc->uc_mcontext.gregs[REG_RCX];
    uint32_t r[4];
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    real_cpuid(leaf, sub, r);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
    mask(leaf, sub, r);
    uc->uc_mcontext.gregs[REG_RAX] = r[0];
    uc->uc_mcontext.gregs[REG_RBX] = r[1];
    uc->uc_mcontext.gregs[REG_RCX] = r[2];
    uc->uc_mcontext.gregs[REG_RDX] = r[3];
    uc->uc_mcontext.gregs[REG_RIP] += 2;
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (real_sigaction == NULL) real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    if (sig != SIGSEGV || !faulting_on) return real_sigaction(sig, act, old);
    if (old != NULL) *old = chained;
    if (act != NULL) chained = *act;
    return 0;
}

/* signal() too: programs that install their crash handler with it (gcc's cc1plus does, and runs
 * CPUID for -march=native) would otherwise replace the handler above */
sighandler_t signal(int sig, sighandler_t handler) {
    if (sig != SIGSEGV || !faulting_on) {
        sighandler_t (*real_signal)(int, sighandler_t) = (sighandler_t(*)(int, sighandler_t))dlsym(RTLD_NEXT, "signal");
        return real_signal(sig, handler);
    }
    sighandler_t previous = (chained.sa_flags & SA_SIGINFO) ? (sighandler_t)chained.sa_sigaction : chained.sa_handler;
    memset(&chained, 0, sizeof chained);
    chained.sa_handler = handler;
    chained.sa_flags = SA_RESTART;
    return previous;
}

__attribute__((constructor)) static void init(void) {
    real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK; /* a stack overflow's handler needs its alternate stack */
    real_sigaction(SIGSEGV, &sa, &chained);
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        real_sigaction(SIGSEGV, &chained, NULL);
        fprintf(stderr, "avx2_cpuid: CPUID faulting is not available here (no cpuid_fault); CPUID is not masked\n");
        return;
    }
    faulting_on = 1;
}
