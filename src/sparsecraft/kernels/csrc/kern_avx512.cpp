// AVX-512 (F, BW, VL) kernels (Skylake-SP and later, Zen 4/5).
#include "kern_common.h"
#ifdef SC_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,bmi2"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,bmi2")
#endif
#define SC_ISA 2
#define SC_NS avx512
#define SC_TABLE kAvx512
#include "kern_impl.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
