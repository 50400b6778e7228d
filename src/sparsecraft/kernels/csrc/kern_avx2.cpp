// AVX2 + FMA kernels (Haswell and later, Zen).
#include "kern_common.h"
#ifdef SC_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,bmi2"))), apply_to = function)
#else
#pragma GCC target("avx2,fma,bmi2")
#endif
#define SC_ISA 1
#define SC_NS avx2
#define SC_TABLE kAvx2
#include "kern_impl.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
