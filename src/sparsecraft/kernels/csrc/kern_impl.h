// Kernel bodies (included once per ISA by kern_<isa>.cpp; not a normal header), SC_ISA: 0 portable, 1 AVX2+FMA, 2 AVX-512.
// Everything here has internal linkage except the table SC_TABLE.
//
// Two regimes (after "Fast Sparse ConvNets", Elsen et al. 2019):
//  * small batch (B <= 4): memory-bound; each row's nonzeros are streamed once and multiplied with
//    the x values at their columns, for all B rows of x at once (CSR and blocks: gathered at the
//    16-bit column indices; N:M: picked by a register permute; bitmask: placed by an expanding load);
//  * larger batch: x is transposed into panels of PW batch columns, xT_p (in, PW), so each nonzero
//    scales a contiguous batch vector; the output row is held in registers (register blocking over
//    the batch, PW/width registers, and R rows at once for R x 1 blocks). PW is chosen by the
//    caller: small layers get panels that fit L1, large ones the widest panel so W streams once.

namespace sc {
namespace SC_NS {
namespace {

// ------------------------------------------------------------------------------------------------
// Epilogue and x packing, generic versions.
// ------------------------------------------------------------------------------------------------

// erf by the rational approximation on [-4, 4] used by Eigen and XLA (|error| < 2e-7 here); the
// vector versions below evaluate the same expression, so every ISA path rounds alike.
constexpr float kErfA[7] = {-1.60960333262415e-02f, -2.95459980854025e-03f, -7.34990630326855e-04f,
                            -5.69250639462346e-05f, -2.10102402082508e-06f, 2.77068142495902e-08f,
                            -2.72614225801306e-10f};
constexpr float kErfB[5] = {-1.42647390514189e-02f, -7.37332916720468e-03f, -1.68282697438203e-03f,
                            -2.13374055278905e-04f, -1.45660718464996e-05f};
constexpr float kRsqrt2 = 0.70710678118654752f;

inline float gelu1(float v) {
  float x = v * kRsqrt2;
  x = x < 4.f ? (x > -4.f ? x : -4.f) : 4.f;
  const float x2 = x * x;
  float p = kErfA[6];
  for (int i = 5; i >= 0; --i) p = p * x2 + kErfA[i];
  float q = kErfB[4];
  for (int i = 3; i >= 0; --i) q = q * x2 + kErfB[i];
  return 0.5f * v * (1.f + x * p / q);
}

// y[b, o] = act(y[b, o] + res[b, o]) for b < B, o in [o0, o1): the epilogue after a kernel that wrote
// x W^T + b itself (small batch, scalar paths).
[[maybe_unused]] void epilogue(float* y, int64_t ld, int64_t B, int64_t o0, int64_t o1, const float* res, int act) {
  if (!res && act == kActNone) return;
  for (int64_t b = 0; b < B; ++b) {
    float* yr = y + b * ld;
    if (res)
      for (int64_t o = o0; o < o1; ++o) yr[o] += res[b * ld + o];
    if (act == kActGelu)
      for (int64_t o = o0; o < o1; ++o) yr[o] = gelu1(yr[o]);
  }
}

inline void pack_one(const float* x, int64_t B, int64_t in, int64_t PW, float* dp, int64_t p, int64_t c, int64_t j) {
  const int64_t b = p * PW + j;
  dp[c * PW + j] = (b < B && c < in) ? x[b * in + c] : 0.f;
}

[[maybe_unused]] void pack_panels_scalar(const float* x, int64_t B, int64_t in, int64_t rows, int64_t PW, int64_t Bp,
                                         float* dst, int64_t c0, int64_t c1) {
  for (int64_t p = 0; p < Bp / PW; ++p)
    for (int64_t j = 0; j < PW; ++j)
      for (int64_t c = c0; c < c1; ++c) pack_one(x, B, in, PW, dst + p * rows * PW, p, c, j);
}

// ------------------------------------------------------------------------------------------------
// Generic scalar versions: used by the portable build and for shapes without a vector path.
// ------------------------------------------------------------------------------------------------

[[maybe_unused]] void block_small_scalar(const BlockArgs& a, int64_t r0, int64_t r1) {
  const int R = a.R, C = a.C;
  const int64_t B = a.B;
  float acc[kSmallBatch][16];
  for (int64_t br = r0; br < r1; ++br) {
    for (int64_t b = 0; b < B; ++b)
      for (int r = 0; r < R; ++r) acc[b][r] = 0.f;
    for (int32_t k = a.rowptr[br]; k < a.rowptr[br + 1]; ++k) {
      const float* v = a.vals + (int64_t)k * R * C;
      const int64_t col0 = (int64_t)a.cols[k] * C;
      for (int64_t b = 0; b < B; ++b) {
        const float* xb = a.x + b * a.in + col0;
        for (int c = 0; c < C; ++c) {
          const float xv = xb[c];
          for (int r = 0; r < R; ++r) acc[b][r] += v[c * R + r] * xv;
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      const int64_t o = br * R + r;
      if (o >= a.out) break;
      const float bo = a.bias ? a.bias[o] : 0.f;
      for (int64_t b = 0; b < B; ++b) a.y[b * a.out + o] = acc[b][r] + bo;
    }
  }
}

[[maybe_unused]] void block_t_scalar(const BlockArgs& a, int64_t r0, int64_t r1) {
  constexpr int BC = 64;
  const int R = a.R, C = a.C;
  const int64_t PW = a.PW, B = a.B;
  float acc[16][BC];
  for (int64_t br = r0; br < r1; ++br) {
    for (int64_t b0 = 0; b0 < B; b0 += PW) {
      const float* xp = a.x + (b0 / PW) * a.in * PW;
      const int nb = (int)((B - b0) < PW ? (B - b0) : PW);
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < nb; ++j) acc[r][j] = 0.f;
      for (int32_t k = a.rowptr[br]; k < a.rowptr[br + 1]; ++k) {
        const float* v = a.vals + (int64_t)k * R * C;
        const int64_t col0 = (int64_t)a.cols[k] * C;
        for (int c = 0; c < C; ++c) {
          const float* xr = xp + (col0 + c) * PW;
          for (int r = 0; r < R; ++r) {
            const float w = v[c * R + r];
            float* ar = acc[r];
            for (int j = 0; j < nb; ++j) ar[j] += w * xr[j];
          }
        }
      }
      for (int r = 0; r < R; ++r) {
        const int64_t o = br * R + r;
        if (o >= a.out) break;
        const float bo = a.bias ? a.bias[o] : 0.f;
        for (int j = 0; j < nb; ++j) a.y[(b0 + j) * a.out + o] = acc[r][j] + bo;
      }
    }
  }
}

[[maybe_unused]] void nm_small_scalar(const NMArgs& a, int64_t r0, int64_t r1) {
  const int N = a.N, M = a.M;
  const int64_t G = a.in / M, L = G * N, B = a.B;
  for (int64_t o = r0; o < r1; ++o) {
    float acc[kSmallBatch] = {0.f, 0.f, 0.f, 0.f};
    const float* v = a.vals + o * L;
    const uint8_t* id = a.idx + o * L;
    for (int64_t g = 0; g < G; ++g)
      for (int n = 0; n < N; ++n) {
        const int64_t j = g * N + n, col = g * M + id[j];
        for (int64_t b = 0; b < B; ++b) acc[b] += v[j] * a.x[b * a.xs + col];
      }
    const float bo = a.bias ? a.bias[o] : 0.f;
    for (int64_t b = 0; b < B; ++b) a.y[b * a.out + o] = acc[b] + bo;
  }
}

[[maybe_unused]] void nm_t_scalar(const NMArgs& a, int64_t r0, int64_t r1) {
  constexpr int BC = 64;
  const int N = a.N, M = a.M;
  const int64_t G = a.in / M, L = G * N, B = a.B, PW = a.PW;
  float acc[BC];
  for (int64_t o = r0; o < r1; ++o) {
    const float* v = a.vals + o * L;
    const uint8_t* id = a.idx + o * L;
    for (int64_t b0 = 0; b0 < B; b0 += PW) {
      const float* xp = a.x + (b0 / PW) * a.in * PW;
      const int nb = (int)((B - b0) < PW ? (B - b0) : PW);
      for (int j = 0; j < nb; ++j) acc[j] = 0.f;
      for (int64_t g = 0; g < G; ++g)
        for (int n = 0; n < N; ++n) {
          const int64_t j = g * N + n;
          const float w = v[j];
          const float* xr = xp + (g * M + id[j]) * PW;
          for (int q = 0; q < nb; ++q) acc[q] += w * xr[q];
        }
      const float bo = a.bias ? a.bias[o] : 0.f;
      for (int j = 0; j < nb; ++j) a.y[(b0 + j) * a.out + o] = acc[j] + bo;
    }
  }
}

[[maybe_unused]] void bit_small_scalar(const BitArgs& a, int64_t r0, int64_t r1) {
  for (int64_t o = r0; o < r1; ++o) {
    float acc[kSmallBatch] = {0.f, 0.f, 0.f, 0.f};
    const float* p = a.vals + a.rowptr[o];
    const uint16_t* mk = a.masks + o * a.ng;
    for (int64_t g = 0; g < a.ng; ++g) {
      unsigned m = mk[g];
      while (m) {
        const int j = __builtin_ctz(m);
        m &= m - 1;
        const float w = *p++;
        for (int64_t b = 0; b < a.B; ++b) acc[b] += w * a.x[b * a.xs + g * 16 + j];
      }
    }
    const float bo = a.bias ? a.bias[o] : 0.f;
    for (int64_t b = 0; b < a.B; ++b) a.y[b * a.out + o] = acc[b] + bo;
  }
}

[[maybe_unused]] void bit_t_scalar(const BitArgs& a, int64_t r0, int64_t r1) {
  constexpr int BC = 64;
  const int64_t PW = a.PW, B = a.B;
  float acc[BC];
  for (int64_t o = r0; o < r1; ++o) {
    for (int64_t b0 = 0; b0 < B; b0 += PW) {
      const float* xp = a.x + (b0 / PW) * a.in * PW;
      const int nb = (int)((B - b0) < PW ? (B - b0) : PW);
      for (int j = 0; j < nb; ++j) acc[j] = 0.f;
      const float* p = a.vals + a.rowptr[o];
      const uint16_t* mk = a.masks + o * a.ng;
      for (int64_t g = 0; g < a.ng; ++g) {
        unsigned m = mk[g];
        while (m) {
          const int j = __builtin_ctz(m);
          m &= m - 1;
          const float w = *p++;
          const float* xr = xp + (g * 16 + j) * PW;
          for (int q = 0; q < nb; ++q) acc[q] += w * xr[q];
        }
      }
      const float bo = a.bias ? a.bias[o] : 0.f;
      for (int j = 0; j < nb; ++j) a.y[(b0 + j) * a.out + o] = acc[j] + bo;
    }
  }
}

[[maybe_unused]] void sddmm_scalar(const SddmmArgs& a, int64_t k0, int64_t k1) {
  const int64_t B = a.B;
  for (int64_t k = k0; k < k1; ++k) {
    const float* g = a.gt + (int64_t)a.rows[k] * B;
    const float* x = a.xt + (int64_t)a.cols[k] * B;
    float acc = 0.f;
    for (int64_t b = 0; b < B; ++b) acc += g[b] * x[b];
    a.out[k] = acc;
  }
}

[[maybe_unused]] void spmm_cf_scalar(const CfArgs& a, int64_t r0, int64_t r1) {
  for (int64_t o = r0; o < r1; ++o) {
    float* yr = a.y + o * a.P;
    const float bo = a.bias ? a.bias[o] : 0.f;
    for (int64_t p = 0; p < a.P; ++p) yr[p] = bo;
    for (int32_t k = a.rowptr[o]; k < a.rowptr[o + 1]; ++k) {
      const float w = a.vals[k];
      const float* xr = a.x + a.xoff[k];
      for (int64_t p = 0; p < a.P; ++p) yr[p] += w * xr[p];
    }
  }
}

// R x 1 block rows [r0, r1): block k adds vals[k, r] * x[xoff[k] + p] to output br * R + r.
[[maybe_unused]] void block_cf_scalar(const CfArgs& a, int64_t r0, int64_t r1) {
  const int R = a.R;
  for (int64_t br = r0; br < r1; ++br) {
    const int64_t o0 = br * R;
    const int nr = (int)((a.out - o0) < R ? (a.out - o0) : R);
    for (int r = 0; r < nr; ++r) {
      float* yr = a.y + (o0 + r) * a.P;
      const float bo = a.bias ? a.bias[o0 + r] : 0.f;
      for (int64_t p = 0; p < a.P; ++p) yr[p] = bo;
    }
    for (int32_t k = a.rowptr[br]; k < a.rowptr[br + 1]; ++k) {
      const float* xr = a.x + a.xoff[k];
      for (int r = 0; r < nr; ++r) {
        const float w = a.vals[(int64_t)k * R + r];
        float* yr = a.y + (o0 + r) * a.P;
        for (int64_t p = 0; p < a.P; ++p) yr[p] += w * xr[p];
      }
    }
  }
}

// ---------------------- int8 values with per-group scales (csr16 or dense order) ----------------------
// Value k is scales[k / G] * q[k]; row o holds the values [q8_begin, q8_end) of the stored order and
// value k sits at input column cols[k] (csr16) or k - q8_begin (dense rows).
inline int64_t q8_begin(const Q8Args& a, int64_t o) { return a.rowptr ? a.rowptr[o] : o * a.ncols; }
inline int64_t q8_end(const Q8Args& a, int64_t o) { return a.rowptr ? a.rowptr[o + 1] : (o + 1) * a.ncols; }

[[maybe_unused]] void q8_small_scalar(const Q8Args& a, int64_t r0, int64_t r1) {
  for (int64_t o = r0; o < r1; ++o) {
    float acc[kSmallBatch] = {0.f, 0.f, 0.f, 0.f};
    const int64_t s = q8_begin(a, o), e = q8_end(a, o);
    for (int64_t k = s; k < e; ++k) {
      const float w = a.scales[k >> a.gshift] * (float)a.q[k];
      const int64_t col = a.cols ? (int64_t)a.cols[k] : k - s;
      for (int64_t b = 0; b < a.B; ++b) acc[b] += w * a.x[b * a.in + col];
    }
    const float bo = a.bias ? a.bias[o] : 0.f;
    for (int64_t b = 0; b < a.B; ++b) a.y[b * a.out + o] = acc[b] + bo;
  }
}

[[maybe_unused]] void q8_t_scalar(const Q8Args& a, int64_t r0, int64_t r1) {
  constexpr int BC = 64;
  const int64_t PW = a.PW, B = a.B;
  float acc[BC];
  for (int64_t o = r0; o < r1; ++o) {
    const int64_t s = q8_begin(a, o), e = q8_end(a, o);
    for (int64_t b0 = 0; b0 < B; b0 += PW) {
      const float* xp = a.x + (b0 / PW) * a.in * PW;
      const int nb = (int)((B - b0) < PW ? (B - b0) : PW);
      for (int j = 0; j < nb; ++j) acc[j] = 0.f;
      for (int64_t k = s; k < e; ++k) {
        const float w = a.scales[k >> a.gshift] * (float)a.q[k];
        const float* xr = xp + (a.cols ? (int64_t)a.cols[k] : k - s) * PW;
        for (int j = 0; j < nb; ++j) acc[j] += w * xr[j];
      }
      const float bo = a.bias ? a.bias[o] : 0.f;
      for (int j = 0; j < nb; ++j) a.y[(b0 + j) * a.out + o] = acc[j] + bo;
    }
  }
}

// R x 1 blocks: block row br holds blocks [rowptr[br], rowptr[br + 1]), block k's R values are the stored
// values [k R, k R + R) and its input column is cols[k].
[[maybe_unused]] void q8b_small_rows(const Q8Args& a, int64_t r0, int64_t r1) {
  const int R = a.R;
  for (int64_t br = r0; br < r1; ++br) {
    float acc[kSmallBatch][16] = {};
    for (int32_t k = a.rowptr[br]; k < a.rowptr[br + 1]; ++k) {
      const int64_t k0 = (int64_t)k * R;
      const float sc = a.scales[k0 >> a.gshift];  // a block never spans two groups (R | 16 | G)
      const int8_t* qk = a.q + k0;
      for (int64_t b = 0; b < a.B; ++b) {
        const float xv = a.x[b * a.in + a.cols[k]];
        for (int r = 0; r < R; ++r) acc[b][r] += sc * (float)qk[r] * xv;
      }
    }
    for (int r = 0; r < R; ++r) {
      const int64_t o = br * R + r;
      if (o >= a.out) break;
      const float bo = a.bias ? a.bias[o] : 0.f;
      for (int64_t b = 0; b < a.B; ++b) a.y[b * a.out + o] = acc[b][r] + bo;
    }
  }
}

[[maybe_unused]] void q8b_t_scalar(const Q8Args& a, int64_t r0, int64_t r1) {
  constexpr int BC = 64;
  const int R = a.R;
  const int64_t PW = a.PW, B = a.B;
  float acc[16][BC];
  for (int64_t br = r0; br < r1; ++br) {
    for (int64_t b0 = 0; b0 < B; b0 += PW) {
      const float* xp = a.x + (b0 / PW) * a.in * PW;
      const int nb = (int)((B - b0) < PW ? (B - b0) : PW);
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < nb; ++j) acc[r][j] = 0.f;
      for (int32_t k = a.rowptr[br]; k < a.rowptr[br + 1]; ++k) {
        const int64_t k0 = (int64_t)k * R;
        const float* xr = xp + (int64_t)a.cols[k] * PW;
        for (int r = 0; r < R; ++r) {
          const float w = a.scales[(k0 + r) >> a.gshift] * (float)a.q[k0 + r];
          for (int j = 0; j < nb; ++j) acc[r][j] += w * xr[j];
        }
      }
      for (int r = 0; r < R; ++r) {
        const int64_t o = br * R + r;
        if (o >= a.out) break;
        const float bo = a.bias ? a.bias[o] : 0.f;
        for (int j = 0; j < nb; ++j) a.y[(b0 + j) * a.out + o] = acc[r][j] + bo;
      }
    }
  }
}

#if SC_ISA >= 1
// ------------------------------------------------------------------------------------------------
// Vector helpers: V<W> wraps a W-float register.
// ------------------------------------------------------------------------------------------------
template <int W> struct V;
template <> struct V<4> {
  using T = __m128;
  static T zero() { return _mm_setzero_ps(); }
  static T load(const float* p) { return _mm_loadu_ps(p); }
  static T set1(float f) { return _mm_set1_ps(f); }
  static T fma(T a, T b, T c) { return _mm_fmadd_ps(a, b, c); }
  static T add(T a, T b) { return _mm_add_ps(a, b); }
  static void store(float* p, T v) { _mm_storeu_ps(p, v); }
};
template <> struct V<8> {
  using T = __m256;
  static T zero() { return _mm256_setzero_ps(); }
  static T load(const float* p) { return _mm256_loadu_ps(p); }
  static T set1(float f) { return _mm256_set1_ps(f); }
  static T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static T add(T a, T b) { return _mm256_add_ps(a, b); }
  static void store(float* p, T v) { _mm256_storeu_ps(p, v); }
};
#if SC_ISA == 2
template <> struct V<16> {
  using T = __m512;
  static T zero() { return _mm512_setzero_ps(); }
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static T set1(float f) { return _mm512_set1_ps(f); }
  static T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static T add(T a, T b) { return _mm512_add_ps(a, b); }
  static void store(float* p, T v) { _mm512_storeu_ps(p, v); }
};
constexpr int kW = 16;
#else
constexpr int kW = 8;
#endif
using VW = V<kW>;
using TW = VW::T;

inline float hsum(TW v) {
#if SC_ISA == 2
  return _mm512_reduce_add_ps(v);
#else
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
#endif
}


// ---------------------------- 8 x 8 transposes: packing x, writing y ----------------------------
inline void transpose8(__m256* r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// gelu1 on 8 lanes (the same operations in the same order).
inline __m256 gelu8(__m256 v) {
  __m256 x = _mm256_mul_ps(v, _mm256_set1_ps(kRsqrt2));
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-4.f)), _mm256_set1_ps(4.f));
  const __m256 x2 = _mm256_mul_ps(x, x);
  __m256 p = _mm256_set1_ps(kErfA[6]);
  for (int i = 5; i >= 0; --i) p = _mm256_add_ps(_mm256_mul_ps(p, x2), _mm256_set1_ps(kErfA[i]));
  __m256 q = _mm256_set1_ps(kErfB[4]);
  for (int i = 3; i >= 0; --i) q = _mm256_add_ps(_mm256_mul_ps(q, x2), _mm256_set1_ps(kErfB[i]));
  const __m256 erf = _mm256_div_ps(_mm256_mul_ps(x, p), q);
  return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), _mm256_add_ps(_mm256_set1_ps(1.f), erf));
}

// pack_panels_scalar with 8 x 8 register transposes where 8 batch rows and 8 columns are in range.
void pack_panels_vec(const float* x, int64_t B, int64_t in, int64_t rows, int64_t PW, int64_t Bp, float* dst,
                     int64_t c0, int64_t c1) {
  for (int64_t p = 0; p < Bp / PW; ++p) {
    float* dp = dst + p * rows * PW;
    for (int64_t j0 = 0; j0 < PW; j0 += 8) {
      const int64_t b0 = p * PW + j0, j1 = (j0 + 8) < PW ? j0 + 8 : PW;
      int64_t c = c0;
      if (b0 + 8 <= B && j1 - j0 == 8) {
        for (; c + 8 <= c1 && c + 8 <= in; c += 8) {
          __m256 r[8];
          for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(x + (b0 + k) * in + c);
          transpose8(r);
          for (int k = 0; k < 8; ++k) _mm256_storeu_ps(dp + (c + k) * PW + j0, r[k]);
        }
      }
      for (; c < c1; ++c)
        for (int64_t j = j0; j < j1; ++j) pack_one(x, B, in, PW, dp, p, c, j);
    }
  }
}

// ---------------------------------- CSR, small batch (gather) ----------------------------------
template <int NB>
void csr_small(const BlockArgs& a, int64_t r0, int64_t r1) {
  const float* x = a.x;
  const int64_t in = a.in;
  for (int64_t o = r0; o < r1; ++o) {
    const int32_t s = a.rowptr[o], e = a.rowptr[o + 1];
    TW acc[NB], acc2[NB];
    for (int b = 0; b < NB; ++b) acc[b] = acc2[b] = VW::zero();
    int32_t k = s;
#if SC_ISA == 2
    for (; k + 32 <= e; k += 32) {
      const __m512i i0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(a.cols + k)));
      const __m512i i1 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(a.cols + k + 16)));
      const __m512 v0 = _mm512_loadu_ps(a.vals + k), v1 = _mm512_loadu_ps(a.vals + k + 16);
      for (int b = 0; b < NB; ++b) {
        acc[b] = _mm512_fmadd_ps(v0, _mm512_i32gather_ps(i0, x + b * in, 4), acc[b]);
        acc2[b] = _mm512_fmadd_ps(v1, _mm512_i32gather_ps(i1, x + b * in, 4), acc2[b]);
      }
    }
    for (; k < e; k += 16) {
      const int cnt = (e - k) < 16 ? (e - k) : 16;
      const __mmask16 m = (__mmask16)((1u << cnt) - 1u);
      const __m512i i0 = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, a.cols + k));
      const __m512 v0 = _mm512_maskz_loadu_ps(m, a.vals + k);
      for (int b = 0; b < NB; ++b)
        acc[b] = _mm512_fmadd_ps(v0, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, i0, x + b * in, 4), acc[b]);
    }
#else
    for (; k + 16 <= e; k += 16) {
      const __m256i i0 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(a.cols + k)));
      const __m256i i1 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(a.cols + k + 8)));
      const __m256 v0 = _mm256_loadu_ps(a.vals + k), v1 = _mm256_loadu_ps(a.vals + k + 8);
      for (int b = 0; b < NB; ++b) {
        acc[b] = _mm256_fmadd_ps(v0, _mm256_i32gather_ps(x + b * in, i0, 4), acc[b]);
        acc2[b] = _mm256_fmadd_ps(v1, _mm256_i32gather_ps(x + b * in, i1, 4), acc2[b]);
      }
    }
    for (; k < e; k += 8) {
      const int cnt = (e - k) < 8 ? (e - k) : 8;
      uint16_t ti[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      float tv[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      std::memcpy(ti, a.cols + k, cnt * sizeof(uint16_t));
      std::memcpy(tv, a.vals + k, cnt * sizeof(float));
      const __m256i i0 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)ti));
      const __m256 v0 = _mm256_loadu_ps(tv);
      const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
      const __m256 m = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(cnt), lane));
      for (int b = 0; b < NB; ++b)
        acc[b] = _mm256_fmadd_ps(v0, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), x + b * in, i0, m, 4), acc[b]);
    }
#endif
    const float bo = a.bias ? a.bias[o] : 0.f;
    for (int b = 0; b < NB; ++b) a.y[b * a.out + o] = hsum(VW::add(acc[b], acc2[b])) + bo;
  }
}

// ------------------------- R x C blocks with R in {4, 8, 16}, small batch -------------------------
// U independent accumulator sets (blocks k, k+1, ... round robin) hide the FMA latency when the
// batch alone gives too few independent chains.
// CT: the block width C at compile time (0: read a.C), so the common C = 1 keeps every
// accumulator in registers.
template <int R, int CT, int NB>
void block_small_vec(const BlockArgs& a, int64_t r0, int64_t r1) {
  constexpr int W = R < kW ? R : kW;
  constexpr int NV = R / W;
  constexpr int U = NB == 1 ? 4 : (NB == 2 ? 2 : 1);
  using Op = V<W>;
  using T = typename Op::T;
  const int C = CT > 0 ? CT : a.C;
  const int64_t RC = (int64_t)R * C;
  float tmp[R];
  for (int64_t br = r0; br < r1; ++br) {
    T acc[U][NB][NV];
    for (int u = 0; u < U; ++u)
      for (int b = 0; b < NB; ++b)
        for (int q = 0; q < NV; ++q) acc[u][b][q] = Op::zero();
    const int32_t s = a.rowptr[br], e = a.rowptr[br + 1];
    int32_t k = s;
    for (; k + U <= e; k += U) {
      for (int u = 0; u < U; ++u) {
        const float* v = a.vals + (int64_t)(k + u) * RC;
        const float* xk = a.x + (int64_t)a.cols[k + u] * C;
        for (int c = 0; c < C; ++c) {
          T w[NV];
          for (int q = 0; q < NV; ++q) w[q] = Op::load(v + c * R + q * W);
          for (int b = 0; b < NB; ++b) {
            const T xv = Op::set1(xk[b * a.in + c]);
            for (int q = 0; q < NV; ++q) acc[u][b][q] = Op::fma(w[q], xv, acc[u][b][q]);
          }
        }
      }
    }
    for (; k < e; ++k) {
      const float* v = a.vals + (int64_t)k * RC;
      const float* xk = a.x + (int64_t)a.cols[k] * C;
      for (int c = 0; c < C; ++c) {
        T w[NV];
        for (int q = 0; q < NV; ++q) w[q] = Op::load(v + c * R + q * W);
        for (int b = 0; b < NB; ++b) {
          const T xv = Op::set1(xk[b * a.in + c]);
          for (int q = 0; q < NV; ++q) acc[0][b][q] = Op::fma(w[q], xv, acc[0][b][q]);
        }
      }
    }
    for (int u = 1; u < U; ++u)
      for (int b = 0; b < NB; ++b)
        for (int q = 0; q < NV; ++q) acc[0][b][q] = Op::add(acc[0][b][q], acc[u][b][q]);
    for (int b = 0; b < NB; ++b) {
      for (int q = 0; q < NV; ++q) Op::store(tmp + q * W, acc[0][b][q]);
      for (int r = 0; r < R; ++r) {
        const int64_t o = br * R + r;
        if (o >= a.out) break;
        a.y[b * a.out + o] = tmp[r] + (a.bias ? a.bias[o] : 0.f);
      }
    }
  }
}

// -------------------------- transposed path: one chunk of NV vectors --------------------------
// Accumulates block row br for batch columns [b0, b0 + NV*kW) of xT into tile rows 0..R-1
// (row stride kTile).
constexpr int kTile = 64;
template <int R, int CT, int NV>
inline void t_chunk(const BlockArgs& a, int64_t br, const float* xp, float* tile) {
  const int C = CT > 0 ? CT : a.C;
  constexpr int64_t ld = NV * kW;  // == a.PW (block_t_r picks NV = PW / kW): row offsets become shifts
  TW acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < NV; ++q) acc[r][q] = VW::zero();
  const int32_t s = a.rowptr[br], e = a.rowptr[br + 1];
  if (R == 1 && C == 1) {
    // plain CSR: two independent accumulator sets hide the FMA latency.
    TW acc2[NV];
    for (int q = 0; q < NV; ++q) acc2[q] = VW::zero();
    int32_t k = s;
    for (; k + 2 <= e; k += 2) {
      const float* x0 = xp + (int64_t)a.cols[k] * ld;
      const float* x1 = xp + (int64_t)a.cols[k + 1] * ld;
      const TW w0 = VW::set1(a.vals[k]), w1 = VW::set1(a.vals[k + 1]);
      for (int q = 0; q < NV; ++q) {
        acc[0][q] = VW::fma(w0, VW::load(x0 + q * kW), acc[0][q]);
        acc2[q] = VW::fma(w1, VW::load(x1 + q * kW), acc2[q]);
      }
    }
    if (k < e) {
      const float* x0 = xp + (int64_t)a.cols[k] * ld;
      const TW w0 = VW::set1(a.vals[k]);
      for (int q = 0; q < NV; ++q) acc[0][q] = VW::fma(w0, VW::load(x0 + q * kW), acc[0][q]);
    }
    for (int q = 0; q < NV; ++q) acc[0][q] = VW::add(acc[0][q], acc2[q]);
  } else {
    for (int32_t k = s; k < e; ++k) {
      const float* v = a.vals + (int64_t)k * R * C;
      const float* xk = xp + (int64_t)a.cols[k] * C * ld;
      for (int c = 0; c < C; ++c) {
        TW xv[NV];
        for (int q = 0; q < NV; ++q) xv[q] = VW::load(xk + c * ld + q * kW);
        for (int r = 0; r < R; ++r) {
          const TW w = VW::set1(v[c * R + r]);
          for (int q = 0; q < NV; ++q) acc[r][q] = VW::fma(w, xv[q], acc[r][q]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < NV; ++q) VW::store(tile + r * kTile + q * kW, acc[r][q]);
}

// The epilogue: y[b, o] = act(v + bias[o] + res[b, o]) (absent terms skipped).
struct Epi {
  const float* bias;
  const float* res;
  int act;
  float* y;
  int64_t out;
  inline void put(int64_t b, int64_t o, float v) const {
    v += bias ? bias[o] : 0.f;
    if (res) v += res[b * out + o];
    y[b * out + o] = act == kActGelu ? gelu1(v) : v;
  }
  inline void put8(int64_t b, int64_t o, __m256 v, __m256 bv) const {
    v = _mm256_add_ps(v, bv);
    if (res) v = _mm256_add_ps(v, _mm256_loadu_ps(res + b * out + o));
    _mm256_storeu_ps(y + b * out + o, act == kActGelu ? gelu8(v) : v);
  }
};

// y[b0 + j, o0 + i] = epilogue(tile[i, j]) for i < rows, j < nb: 8 x 8 register transposes, so
// the stores run contiguously along the outputs.
inline void write_tile(const float* tile, const Epi& e, int64_t o0, int64_t rows, int64_t b0, int64_t nb) {
  int64_t j0 = 0;
  for (; j0 + 8 <= nb; j0 += 8) {
    int64_t i0 = 0;
    for (; i0 + 8 <= rows; i0 += 8) {
      __m256 r[8];
      for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(tile + (i0 + k) * kTile + j0);
      transpose8(r);
      const __m256 bv = e.bias ? _mm256_loadu_ps(e.bias + o0 + i0) : _mm256_setzero_ps();
      for (int k = 0; k < 8; ++k) e.put8(b0 + j0 + k, o0 + i0, r[k], bv);
    }
    for (int64_t j = j0; j < j0 + 8; ++j)
      for (int64_t i = i0; i < rows; ++i) e.put(b0 + j, o0 + i, tile[i * kTile + j]);
  }
  for (int64_t j = j0; j < nb; ++j)
    for (int64_t i = 0; i < rows; ++i) e.put(b0 + j, o0 + i, tile[i * kTile + j]);
}

// Output rows are processed 16 at a time (16/R block rows) so the results can be written to y
// (batch, out) as contiguous runs along the outputs rather than strided single floats.
template <int R, int CT, int NV>
void block_t_vec(const BlockArgs& a, int64_t r0, int64_t r1) {
  constexpr int G = R >= 16 ? 1 : 16 / R;
  alignas(64) float tile[16 * kTile];
  const int64_t PW = a.PW;
  for (int64_t b0 = 0; b0 < a.B; b0 += PW) {
    const float* xp = a.x + (b0 / PW) * a.in * PW;
    const int64_t nb = (a.B - b0) < PW ? (a.B - b0) : PW;
    for (int64_t g0 = r0; g0 < r1; g0 += G) {
      const int64_t g1 = (g0 + G) < r1 ? g0 + G : r1;
      const int64_t o0 = g0 * R;
      const int64_t o1 = (g1 * R) < a.out ? g1 * R : a.out;
      for (int64_t br = g0; br < g1; ++br) t_chunk<R, CT, NV>(a, br, xp, tile + (br - g0) * R * kTile);
      write_tile(tile, Epi{a.bias, a.res, a.act, a.y, a.out}, o0, o1 - o0, b0, nb);
    }
  }
}

// Picks the instantiation for R, C and the panel width (PW / kW registers, <= max_nv(R)).
template <int R, int NVMAX>
void block_t_r(const BlockArgs& a, int64_t r0, int64_t r1) {
  const int nv = (int)(a.PW / kW);
  if (a.C == 1) {
    if (nv >= 4 && NVMAX >= 4) return block_t_vec<R, 1, (NVMAX >= 4 ? 4 : 1)>(a, r0, r1);
    if (nv >= 2 && NVMAX >= 2) return block_t_vec<R, 1, (NVMAX >= 2 ? 2 : 1)>(a, r0, r1);
    return block_t_vec<R, 1, 1>(a, r0, r1);
  }
  if (nv >= 4 && NVMAX >= 4) return block_t_vec<R, 0, (NVMAX >= 4 ? 4 : 1)>(a, r0, r1);
  if (nv >= 2 && NVMAX >= 2) return block_t_vec<R, 0, (NVMAX >= 2 ? 2 : 1)>(a, r0, r1);
  return block_t_vec<R, 0, 1>(a, r0, r1);
}

// ------------------------------------ N:M, small batch ------------------------------------------
// A chunk of P x-columns (P = 32 for AVX-512, 16 for AVX2) holds K = P*N/M values; each value's
// x operand is picked from the two registers holding the chunk with a permute, no gather.
template <int NB>
void nm_small_vec(const NMArgs& a, int64_t r0, int64_t r1) {
  const int N = a.N, M = a.M;
  constexpr int P = 2 * kW;
  const int64_t L = (a.in / M) * N, K = (int64_t)P * N / M;
  const int64_t nch = (a.in + P - 1) / P;
  alignas(64) int32_t basev[2 * kW];
  for (int j = 0; j < 2 * kW; ++j) basev[j] = (j / N) * M;
#if SC_ISA == 2
  const __m512i base0 = _mm512_loadu_si512(basev), base1 = _mm512_loadu_si512(basev + 16);
#else
  const __m256i base0 = _mm256_loadu_si256((const __m256i*)basev);
  const __m256i base1 = _mm256_loadu_si256((const __m256i*)(basev + 8));
  const __m256i seven = _mm256_set1_epi32(7);
#endif
  for (int64_t o = r0; o < r1; ++o) {
    const float* v = a.vals + o * L;
    const uint8_t* id = a.idx + o * L;
    TW acc[NB];
    for (int b = 0; b < NB; ++b) acc[b] = VW::zero();
    int64_t ch = 0;
    if (K == kW) {
      // one full vector per chunk (2:4, 4:8, ...): unmasked loads, two accumulator sets.
      TW acc2[NB];
      for (int b = 0; b < NB; ++b) acc2[b] = VW::zero();
      const int64_t full = L / K;
      for (; ch + 2 <= full; ch += 2) {
        for (int h = 0; h < 2; ++h) {
          const int64_t c = ch + h, vs = c * K;
#if SC_ISA == 2
          const __m512i pos = _mm512_add_epi32(base0, _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(id + vs))));
          const __m512 w = _mm512_loadu_ps(v + vs);
          for (int b = 0; b < NB; ++b) {
            const float* xc = a.x + b * a.xs + c * P;
            const __m512 xv = _mm512_permutex2var_ps(_mm512_loadu_ps(xc), pos, _mm512_loadu_ps(xc + 16));
            if (h) acc2[b] = _mm512_fmadd_ps(w, xv, acc2[b]); else acc[b] = _mm512_fmadd_ps(w, xv, acc[b]);
          }
#else
          const __m256i pos = _mm256_add_epi32(base0, _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(id + vs))));
          const __m256 hi = _mm256_castsi256_ps(_mm256_cmpgt_epi32(pos, seven));
          const __m256 w = _mm256_loadu_ps(v + vs);
          for (int b = 0; b < NB; ++b) {
            const float* xc = a.x + b * a.xs + c * P;
            const __m256 xv = _mm256_blendv_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(xc), pos),
                                               _mm256_permutevar8x32_ps(_mm256_loadu_ps(xc + 8), pos), hi);
            if (h) acc2[b] = _mm256_fmadd_ps(w, xv, acc2[b]); else acc[b] = _mm256_fmadd_ps(w, xv, acc[b]);
          }
#endif
        }
      }
      for (int b = 0; b < NB; ++b) acc[b] = VW::add(acc[b], acc2[b]);
    }
    for (; ch < nch; ++ch) {
      const int64_t vs = ch * K;
      const int64_t cnt = (L - vs) < K ? (L - vs) : K;
      if (cnt <= 0) break;
      TW xa[NB], xb[NB];
      for (int b = 0; b < NB; ++b) {
        xa[b] = VW::load(a.x + b * a.xs + ch * P);
        xb[b] = VW::load(a.x + b * a.xs + ch * P + kW);
      }
      for (int64_t q = 0; q * kW < cnt; ++q) {
        const int64_t c = (cnt - q * kW) < kW ? (cnt - q * kW) : kW;
#if SC_ISA == 2
        const __mmask16 m = (__mmask16)((1u << c) - 1u);
        const __m512i pos = _mm512_add_epi32(q ? base1 : base0,
                                             _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, id + vs + q * kW)));
        const __m512 w = _mm512_maskz_loadu_ps(m, v + vs + q * kW);
        for (int b = 0; b < NB; ++b)
          acc[b] = _mm512_fmadd_ps(w, _mm512_permutex2var_ps(xa[b], pos, xb[b]), acc[b]);
#else
        uint8_t ti[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        float tv[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        const uint8_t* ip = id + vs + q * kW;
        const float* vp = v + vs + q * kW;
        if (c < kW) {
          std::memcpy(ti, ip, c);
          std::memcpy(tv, vp, c * sizeof(float));
          ip = ti;
          vp = tv;
        }
        const __m256i pos = _mm256_add_epi32(q ? base1 : base0,
                                             _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)ip)));
        const __m256 hi = _mm256_castsi256_ps(_mm256_cmpgt_epi32(pos, seven));
        const __m256 w = _mm256_loadu_ps(vp);
        for (int b = 0; b < NB; ++b) {
          const __m256 lo_x = _mm256_permutevar8x32_ps(xa[b], pos);
          const __m256 hi_x = _mm256_permutevar8x32_ps(xb[b], pos);
          acc[b] = _mm256_fmadd_ps(w, _mm256_blendv_ps(lo_x, hi_x, hi), acc[b]);
        }
#endif
      }
    }
    const float bo = a.bias ? a.bias[o] : 0.f;
    for (int b = 0; b < NB; ++b) a.y[b * a.out + o] = hsum(acc[b]) + bo;
  }
}

// ------------------------------------ N:M, transposed path --------------------------------------
template <int NV>
inline void nm_t_chunk(const NMArgs& a, int64_t o, const float* xp, float* tile) {
  const int N = a.N, M = a.M;
  const int64_t G = a.in / M, L = G * N, ld = a.PW;
  const float* v = a.vals + o * L;
  const uint8_t* id = a.idx + o * L;
  TW acc[NV], acc2[NV];
  for (int q = 0; q < NV; ++q) acc[q] = acc2[q] = VW::zero();
  int64_t j = 0;
  for (int64_t g = 0; g < G; ++g) {
    const float* xg = xp + g * M * ld;
    int n = 0;
    for (; n + 2 <= N; n += 2, j += 2) {
      const float* x0 = xg + (int64_t)id[j] * ld;
      const float* x1 = xg + (int64_t)id[j + 1] * ld;
      const TW w0 = VW::set1(v[j]), w1 = VW::set1(v[j + 1]);
      for (int q = 0; q < NV; ++q) {
        acc[q] = VW::fma(w0, VW::load(x0 + q * kW), acc[q]);
        acc2[q] = VW::fma(w1, VW::load(x1 + q * kW), acc2[q]);
      }
    }
    for (; n < N; ++n, ++j) {
      const float* x0 = xg + (int64_t)id[j] * ld;
      const TW w0 = VW::set1(v[j]);
      for (int q = 0; q < NV; ++q) acc[q] = VW::fma(w0, VW::load(x0 + q * kW), acc[q]);
    }
  }
  for (int q = 0; q < NV; ++q) VW::store(tile + q * kW, VW::add(acc[q], acc2[q]));
}

template <int NV>
void nm_t_vec(const NMArgs& a, int64_t r0, int64_t r1) {
  alignas(64) float tile[16 * kTile];
  const int64_t PW = a.PW;
  for (int64_t b0 = 0; b0 < a.B; b0 += PW) {
    const float* xp = a.x + (b0 / PW) * a.in * PW;
    const int64_t nb = (a.B - b0) < PW ? (a.B - b0) : PW;
    for (int64_t o0 = r0; o0 < r1; o0 += 16) {
      const int64_t o1 = (o0 + 16) < r1 ? o0 + 16 : r1;
      for (int64_t o = o0; o < o1; ++o) nm_t_chunk<NV>(a, o, xp, tile + (o - o0) * kTile);
      write_tile(tile, Epi{a.bias, a.res, a.act, a.y, a.out}, o0, o1 - o0, b0, nb);
    }
  }
}

int max_nv(int R) {
#if SC_ISA == 2
  switch (R) {
    case 1: case 2: case 4: return 4;
    case 8: return 2;
    case 16: return 1;
    default: return 0;
  }
#else
  switch (R) {
    case 1: case 2: return 4;
    case 4: return 2;
    case 8: return 1;
    default: return 0;
  }
#endif
}

// ------------------------------- bitmask, small batch ---------------------------------------------
// Each group of 16 inputs: its mask selects where the next popcount(mask) values go. AVX-512 places
// them with one expanding load; AVX2 with a permute from a 256-entry table per 8-input half.
#if SC_ISA == 1
struct ExpandLut {
  alignas(32) int32_t idx[256][8];
  ExpandLut() {
    for (int m = 0; m < 256; ++m) {
      int k = 0;
      for (int j = 0; j < 8; ++j) idx[m][j] = (m >> j) & 1 ? k++ : 0;
    }
  }
};
const ExpandLut& expand_lut() {
  static const ExpandLut lut;
  return lut;
}
#endif

template <int NB>
void bit_small_vec(const BitArgs& a, int64_t r0, int64_t r1) {
#if SC_ISA == 1
  const ExpandLut& lut = expand_lut();
  const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
#endif
  for (int64_t o = r0; o < r1; ++o) {
    const float* p = a.vals + a.rowptr[o];
    const uint16_t* mk = a.masks + o * a.ng;
    TW acc[NB], acc2[NB];
    for (int b = 0; b < NB; ++b) acc[b] = acc2[b] = VW::zero();
#if SC_ISA == 2
    // unconditional: a branch on empty groups mispredicts at high sparsity; the values are
    // loaded with a plain (or, near the end, masked) load and spread with the register expand.
    auto group = [&](int64_t g, TW* ac) {
      const unsigned m = mk[g];
      const int64_t left = a.vals_end - p;
      const __m512 raw = left >= 16 ? _mm512_loadu_ps(p)
                                    : _mm512_maskz_loadu_ps((__mmask16)((1u << (left > 0 ? left : 0)) - 1u), p);
      const __m512 w = _mm512_maskz_expand_ps((__mmask16)m, raw);
      p += __builtin_popcount(m);
      for (int b = 0; b < NB; ++b) ac[b] = _mm512_fmadd_ps(w, _mm512_loadu_ps(a.x + b * a.xs + g * 16), ac[b]);
    };
    int64_t g = 0;
    for (; g + 2 <= a.ng; g += 2) {
      group(g, acc);
      group(g + 1, acc2);
    }
    if (g < a.ng) group(g, acc);
#else
    for (int64_t g = 0; g < a.ng; ++g) {
      const unsigned m = mk[g];
      if (!m) continue;
      for (int h = 0; h < 2; ++h) {
        const unsigned mh = (m >> (8 * h)) & 0xFFu;
        if (!mh) continue;
        __m256 raw;
        if (p + 8 <= a.vals_end) {
          raw = _mm256_loadu_ps(p);
        } else {
          float t[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
          std::memcpy(t, p, (size_t)(a.vals_end - p) * sizeof(float));
          raw = _mm256_loadu_ps(t);
        }
        const __m256i sel = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)mh), bits), bits);
        const __m256 w = _mm256_and_ps(_mm256_permutevar8x32_ps(raw, _mm256_load_si256((const __m256i*)lut.idx[mh])),
                                       _mm256_castsi256_ps(sel));
        p += __builtin_popcount(mh);
        for (int b = 0; b < NB; ++b) {
          const __m256 xv = _mm256_loadu_ps(a.x + b * a.xs + g * 16 + 8 * h);
          if (h) acc2[b] = _mm256_fmadd_ps(w, xv, acc2[b]); else acc[b] = _mm256_fmadd_ps(w, xv, acc[b]);
        }
      }
    }
#endif
    const float bo = a.bias ? a.bias[o] : 0.f;
    for (int b = 0; b < NB; ++b) a.y[b * a.out + o] = hsum(VW::add(acc[b], acc2[b])) + bo;
  }
}

template <int NV>
inline void bit_t_chunk(const BitArgs& a, int64_t o, const float* xp, float* tile) {
  const int64_t ld = a.PW;
  const float* p = a.vals + a.rowptr[o];
  const uint16_t* mk = a.masks + o * a.ng;
  TW acc[NV], acc2[NV];
  for (int q = 0; q < NV; ++q) acc[q] = acc2[q] = VW::zero();
  for (int64_t g = 0; g < a.ng; ++g) {
    unsigned m = mk[g];
    const float* xg = xp + g * 16 * ld;
    while (m) {
      const int j0 = __builtin_ctz(m);
      m &= m - 1;
      const TW w0 = VW::set1(*p++);
      const float* x0 = xg + (int64_t)j0 * ld;
      if (m) {
        const int j1 = __builtin_ctz(m);
        m &= m - 1;
        const TW w1 = VW::set1(*p++);
        const float* x1 = xg + (int64_t)j1 * ld;
        for (int q = 0; q < NV; ++q) acc2[q] = VW::fma(w1, VW::load(x1 + q * kW), acc2[q]);
      }
      for (int q = 0; q < NV; ++q) acc[q] = VW::fma(w0, VW::load(x0 + q * kW), acc[q]);
    }
  }
  for (int q = 0; q < NV; ++q) VW::store(tile + q * kW, VW::add(acc[q], acc2[q]));
}

template <int NV>
void bit_t_vec(const BitArgs& a, int64_t r0, int64_t r1) {
  alignas(64) float tile[16 * kTile];
  const int64_t PW = a.PW;
  for (int64_t b0 = 0; b0 < a.B; b0 += PW) {
    const float* xp = a.x + (b0 / PW) * a.in * PW;
    const int64_t nb = (a.B - b0) < PW ? (a.B - b0) : PW;
    for (int64_t o0 = r0; o0 < r1; o0 += 16) {
      const int64_t o1 = (o0 + 16) < r1 ? o0 + 16 : r1;
      for (int64_t o = o0; o < o1; ++o) bit_t_chunk<NV>(a, o, xp, tile + (o - o0) * kTile);
      write_tile(tile, Epi{a.bias, a.res, a.act, a.y, a.out}, o0, o1 - o0, b0, nb);
    }
  }
}

// ------------------------------ channels-first SpMM (direct sparse conv) ---------------------------
// Pixel panels of NV vectors outermost, so the panel of x (in x NV*kW floats) stays in cache while
// every output row of the range streams its nonzeros over it; each row's panel of y is held in
// registers and stored once.
template <int NV>
inline void cf_panel(const CfArgs& a, int64_t r0, int64_t r1, int64_t p0) {
  for (int64_t o = r0; o < r1; ++o) {
    const TW b = VW::set1(a.bias ? a.bias[o] : 0.f);
    TW acc[NV], acc2[NV];
    for (int q = 0; q < NV; ++q) {
      acc[q] = b;
      acc2[q] = VW::zero();
    }
    const float* xp = a.x + p0;
    int32_t k = a.rowptr[o];
    const int32_t e = a.rowptr[o + 1];
    for (; k + 2 <= e; k += 2) {
      const TW w0 = VW::set1(a.vals[k]), w1 = VW::set1(a.vals[k + 1]);
      const float* x0 = xp + a.xoff[k];
      const float* x1 = xp + a.xoff[k + 1];
      for (int q = 0; q < NV; ++q) {
        acc[q] = VW::fma(w0, VW::load(x0 + q * kW), acc[q]);
        acc2[q] = VW::fma(w1, VW::load(x1 + q * kW), acc2[q]);
      }
    }
    if (k < e) {
      const TW w0 = VW::set1(a.vals[k]);
      const float* x0 = xp + a.xoff[k];
      for (int q = 0; q < NV; ++q) acc[q] = VW::fma(w0, VW::load(x0 + q * kW), acc[q]);
    }
    float* yr = a.y + o * a.P + p0;
    for (int q = 0; q < NV; ++q) VW::store(yr + q * kW, VW::add(acc[q], acc2[q]));
  }
}

void spmm_cf_vec(const CfArgs& a, int64_t r0, int64_t r1) {
  constexpr int64_t kPanel = 4 * kW;
  int64_t p0 = 0;
  for (; p0 + kPanel <= a.P; p0 += kPanel) cf_panel<4>(a, r0, r1, p0);
  for (; p0 + kW <= a.P; p0 += kW) cf_panel<1>(a, r0, r1, p0);
  if (p0 < a.P) {  // the last P % kW pixels
    for (int64_t o = r0; o < r1; ++o) {
      float* yr = a.y + o * a.P;
      const float bo = a.bias ? a.bias[o] : 0.f;
      for (int64_t p = p0; p < a.P; ++p) yr[p] = bo;
      for (int32_t k = a.rowptr[o]; k < a.rowptr[o + 1]; ++k) {
        const float w = a.vals[k];
        const float* xr = a.x + a.xoff[k];
        for (int64_t p = p0; p < a.P; ++p) yr[p] += w * xr[p];
      }
    }
  }
}

// R x 1 blocks (SparseByteNN's kernel groups): per stored block, NV vectors of the input pixel panel
// are loaded once and each of RR output rows adds one broadcast weight times them, so RR x NV
// accumulators stay in registers and every lane does useful work. RS is the block height in vals
// (RS = 8 runs as two passes of RR = 4 where registers are few).
template <int RS, int RR, int NV>
inline void cfb_panel(const CfArgs& a, int64_t r0, int64_t r1, int64_t p0) {
  for (int64_t br = r0; br < r1; ++br) {
    for (int h = 0; h < RS; h += RR) {
      const int64_t o0 = br * RS + h;
      if (o0 >= a.out) break;
      const int nr = (int)((a.out - o0) < RR ? (a.out - o0) : RR);
      TW acc[RR][NV];
      for (int r = 0; r < RR; ++r) {
        const TW b = VW::set1(a.bias && r < nr ? a.bias[o0 + r] : 0.f);
        for (int q = 0; q < NV; ++q) acc[r][q] = b;
      }
      const float* xp = a.x + p0;
      const float* v = a.vals + h;
      for (int32_t k = a.rowptr[br]; k < a.rowptr[br + 1]; ++k) {
        const float* xk = xp + a.xoff[k];
        TW xv[NV];
        for (int q = 0; q < NV; ++q) xv[q] = VW::load(xk + q * kW);
        const float* vk = v + (int64_t)k * RS;
        for (int r = 0; r < RR; ++r) {
          const TW w = VW::set1(vk[r]);
          for (int q = 0; q < NV; ++q) acc[r][q] = VW::fma(w, xv[q], acc[r][q]);
        }
      }
      for (int r = 0; r < nr; ++r) {
        float* yr = a.y + (o0 + r) * a.P + p0;
        for (int q = 0; q < NV; ++q) VW::store(yr + q * kW, acc[r][q]);
      }
    }
  }
}

template <int RS, int RR, int NV>
void block_cf_rows(const CfArgs& a, int64_t r0, int64_t r1);

// Block rows in chunks whose weights and offsets (RS * 4 + 4 bytes a block) fit in ~24 KB of L1, each
// chunk swept over all pixel panels, so the weights are not re-streamed from L2 once per panel.
template <int RS, int RR, int NV>
void block_cf_r(const CfArgs& a, int64_t r0, int64_t r1) {
  constexpr int64_t kChunkBlocks = 24576 / (RS * 4 + 4);
  while (r0 < r1) {
    int64_t e = r0 + 1;
    while (e < r1 && a.rowptr[e + 1] - a.rowptr[r0] <= kChunkBlocks) ++e;
    block_cf_rows<RS, RR, NV>(a, r0, e);
    r0 = e;
  }
}

template <int RS, int RR, int NV>
void block_cf_rows(const CfArgs& a, int64_t r0, int64_t r1) {
  constexpr int64_t kPanel = NV * kW;
  int64_t p0 = 0;
  for (; p0 + kPanel <= a.P; p0 += kPanel) cfb_panel<RS, RR, NV>(a, r0, r1, p0);
  for (; p0 + kW <= a.P; p0 += kW) cfb_panel<RS, RR, 1>(a, r0, r1, p0);
  if (p0 < a.P) {  // the last P % kW pixels
    for (int64_t br = r0; br < r1; ++br) {
      const int64_t o0 = br * RS;
      const int nr = (int)((a.out - o0) < RS ? (a.out - o0) : RS);
      for (int r = 0; r < nr; ++r) {
        float* yr = a.y + (o0 + r) * a.P;
        const float bo = a.bias ? a.bias[o0 + r] : 0.f;
        for (int64_t p = p0; p < a.P; ++p) yr[p] = bo;
      }
      for (int32_t k = a.rowptr[br]; k < a.rowptr[br + 1]; ++k) {
        const float* xr = a.x + a.xoff[k];
        for (int r = 0; r < nr; ++r) {
          const float w = a.vals[(int64_t)k * RS + r];
          float* yr = a.y + (o0 + r) * a.P;
          for (int64_t p = p0; p < a.P; ++p) yr[p] += w * xr[p];
        }
      }
    }
  }
}

// AVX-512 (32 registers): 8 x 3 or 4 x 4 accumulators; AVX2 (16): 4 x 2, R = 8 in two passes.
void block_cf_vec(const CfArgs& a, int64_t r0, int64_t r1) {
#if SC_ISA == 2
  if (a.R == 8) return block_cf_r<8, 8, 3>(a, r0, r1);
  if (a.R == 4) return block_cf_r<4, 4, 4>(a, r0, r1);
#else
  if (a.R == 8) return block_cf_r<8, 4, 2>(a, r0, r1);
  if (a.R == 4) return block_cf_r<4, 4, 2>(a, r0, r1);
#endif
  block_cf_scalar(a, r0, r1);
}

// ------------------------------------ SDDMM (weight gradient) ------------------------------------
// Four stored weights at a time, each a dot product over the batch with two accumulators; the
// batch tail (B not a multiple of the vector width) is masked (AVX-512) or scalar (AVX2).
void sddmm_vec(const SddmmArgs& a, int64_t k0, int64_t k1) {
  constexpr int U = 4;
  const int64_t B = a.B, Bv = B / kW * kW;
  int64_t k = k0;
  for (; k + U <= k1; k += U) {
    const float* g[U];
    const float* x[U];
    TW acc[U], acc2[U];
    for (int u = 0; u < U; ++u) {
      g[u] = a.gt + (int64_t)a.rows[k + u] * B;
      x[u] = a.xt + (int64_t)a.cols[k + u] * B;
      acc[u] = acc2[u] = VW::zero();
    }
    int64_t b = 0;
    for (; b + 2 * kW <= Bv; b += 2 * kW)
      for (int u = 0; u < U; ++u) {
        acc[u] = VW::fma(VW::load(g[u] + b), VW::load(x[u] + b), acc[u]);
        acc2[u] = VW::fma(VW::load(g[u] + b + kW), VW::load(x[u] + b + kW), acc2[u]);
      }
    for (; b < Bv; b += kW)
      for (int u = 0; u < U; ++u) acc[u] = VW::fma(VW::load(g[u] + b), VW::load(x[u] + b), acc[u]);
#if SC_ISA == 2
    if (b < B) {
      const __mmask16 m = (__mmask16)((1u << (B - b)) - 1u);
      for (int u = 0; u < U; ++u)
        acc[u] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, g[u] + b), _mm512_maskz_loadu_ps(m, x[u] + b), acc[u]);
    }
    for (int u = 0; u < U; ++u) a.out[k + u] = hsum(VW::add(acc[u], acc2[u]));
#else
    for (int u = 0; u < U; ++u) {
      float t = hsum(VW::add(acc[u], acc2[u]));
      for (int64_t j = b; j < B; ++j) t += g[u][j] * x[u][j];
      a.out[k + u] = t;
    }
#endif
  }
  if (k < k1) sddmm_scalar(a, k, k1);
}

// ------------------------- int8 values: dequantise 16 at a time, fp32 loops -------------------------
// Rows are walked in segments of at most kSeg values; each segment is dequantised into an L1 buffer
// from the aligned 16-value runs that cover it (one scale per run, as G is a multiple of 16; the
// padding of q past the last value makes the last run whole), then the fp32 loop reads it.
constexpr int64_t kSeg = 256;

// buf (kSeg + 32 floats) <- the values of the runs covering [s, e); returns p with p[k - s] = w_k.
inline const float* q8_dequant(const Q8Args& a, int64_t s, int64_t e, float* buf) {
  const int64_t base = s & ~(int64_t)15;
  for (int64_t k0 = base; k0 < e; k0 += 16) {
    float* d = buf + (k0 - base);
    const int8_t* qp = a.q + k0;
#if SC_ISA == 2
    const __m512i qi = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)qp));
    _mm512_storeu_ps(d, _mm512_mul_ps(_mm512_cvtepi32_ps(qi), _mm512_set1_ps(a.scales[k0 >> a.gshift])));
#else
    const __m256 sc = _mm256_set1_ps(a.scales[k0 >> a.gshift]);
    const __m256i q0 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)qp));
    const __m256i q1 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(qp + 8)));
    _mm256_storeu_ps(d, _mm256_mul_ps(_mm256_cvtepi32_ps(q0), sc));
    _mm256_storeu_ps(d + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(q1), sc));
#endif
  }
  return buf + (s - base);
}

// Small batch: csr16 gathers x at the column indices, dense rows load x contiguously.
#if SC_ISA == 2
// The aligned 16-value runs covering a row are dequantised in registers (lanes outside the row masked
// off), two runs per step into two accumulator sets so the FMA chains overlap.
template <int NB, bool DENSE>
inline void q8_run(const Q8Args& a, int64_t s, int64_t e, int64_t k0, __m512* acc) {
  __mmask16 m = 0xFFFF;
  if (k0 < s) m = (__mmask16)(m & (0xFFFFu << (s - k0)));
  if (k0 + 16 > e) m = (__mmask16)(m & ((1u << (e - k0)) - 1u));
  const __m512i qi = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(a.q + k0)));
  const __m512 w = _mm512_mul_ps(_mm512_cvtepi32_ps(qi), _mm512_set1_ps(a.scales[k0 >> a.gshift]));
  if (DENSE) {
    const float* xk = a.x + (k0 - s);  // lanes before s are masked off
    for (int b = 0; b < NB; ++b) acc[b] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(m, xk + b * a.in), acc[b]);
  } else {
    const __m512i ix = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, a.cols + k0));
    for (int b = 0; b < NB; ++b)
      acc[b] = _mm512_fmadd_ps(w, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, ix, a.x + b * a.in, 4), acc[b]);
  }
}

template <int NB, bool DENSE>
void q8_small_vec(const Q8Args& a, int64_t r0, int64_t r1) {
  for (int64_t o = r0; o < r1; ++o) {
    __m512 acc[NB], acc2[NB];
    for (int b = 0; b < NB; ++b) acc[b] = acc2[b] = _mm512_setzero_ps();
    const int64_t s = q8_begin(a, o), e = q8_end(a, o);
    int64_t k0 = s & ~(int64_t)15;
    for (; k0 + 16 < e; k0 += 32) {
      q8_run<NB, DENSE>(a, s, e, k0, acc);
      q8_run<NB, DENSE>(a, s, e, k0 + 16, acc2);
    }
    if (k0 < e) q8_run<NB, DENSE>(a, s, e, k0, acc);
    const float bo = a.bias ? a.bias[o] : 0.f;
    for (int b = 0; b < NB; ++b) a.y[b * a.out + o] = _mm512_reduce_add_ps(_mm512_add_ps(acc[b], acc2[b])) + bo;
  }
}
#else
// AVX2: each row segment is dequantised into the L1 buffer, then 16 values per step in two chains.
template <int NB, bool DENSE>
void q8_small_vec(const Q8Args& a, int64_t r0, int64_t r1) {
  alignas(64) float buf[kSeg + 32];
  for (int64_t o = r0; o < r1; ++o) {
    __m256 acc[NB], acc2[NB];
    float tail[NB];
    for (int b = 0; b < NB; ++b) {
      acc[b] = acc2[b] = _mm256_setzero_ps();
      tail[b] = 0.f;
    }
    const int64_t s = q8_begin(a, o), e = q8_end(a, o);
    for (int64_t s0 = s; s0 < e; s0 += kSeg) {
      const int64_t n = ((s0 + kSeg) < e ? s0 + kSeg : e) - s0;
      const float* w = q8_dequant(a, s0, s0 + n, buf);
      const float* xs = a.x + (s0 - s);  // dense: x columns of this segment
      const uint16_t* cs = DENSE ? nullptr : a.cols + s0;
      auto step = [&](int64_t i, __m256* ac) {
        const __m256 wv = _mm256_loadu_ps(w + i);
        if (DENSE) {
          for (int b = 0; b < NB; ++b) ac[b] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xs + b * a.in + i), ac[b]);
        } else {
          const __m256i ix = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(cs + i)));
          for (int b = 0; b < NB; ++b) ac[b] = _mm256_fmadd_ps(wv, _mm256_i32gather_ps(a.x + b * a.in, ix, 4), ac[b]);
        }
      };
      int64_t i = 0;
      for (; i + 16 <= n; i += 16) {
        step(i, acc);
        step(i + 8, acc2);
      }
      for (; i + 8 <= n; i += 8) step(i, acc);
      for (; i < n; ++i) {
        const int64_t col = DENSE ? (s0 - s) + i : (int64_t)cs[i];
        for (int b = 0; b < NB; ++b) tail[b] += w[i] * a.x[b * a.in + col];
      }
    }
    const float bo = a.bias ? a.bias[o] : 0.f;
    for (int b = 0; b < NB; ++b) a.y[b * a.out + o] = hsum(_mm256_add_ps(acc[b], acc2[b])) + tail[b] + bo;
  }
}
#endif

// Transposed path: one output row over NV vectors of batch columns (as t_chunk's plain CSR loop).
template <int NV, bool DENSE>
inline void q8_t_chunk(const Q8Args& a, int64_t o, const float* xp, float* tile) {
  constexpr int64_t ld = NV * kW;  // == a.PW
  alignas(64) float buf[kSeg + 32];
  TW acc[NV], acc2[NV];
  for (int q = 0; q < NV; ++q) acc[q] = acc2[q] = VW::zero();
  const int64_t s = q8_begin(a, o), e = q8_end(a, o);
  for (int64_t s0 = s; s0 < e; s0 += kSeg) {
    const int64_t n = ((s0 + kSeg) < e ? s0 + kSeg : e) - s0;
    const float* w = q8_dequant(a, s0, s0 + n, buf);
    const float* xs = xp + (s0 - s) * ld;  // dense: x row of this segment's first value
    const uint16_t* cs = DENSE ? nullptr : a.cols + s0;
    int64_t i = 0;
    for (; i + 2 <= n; i += 2) {
      const float* x0 = DENSE ? xs + i * ld : xp + (int64_t)cs[i] * ld;
      const float* x1 = DENSE ? x0 + ld : xp + (int64_t)cs[i + 1] * ld;
      const TW w0 = VW::set1(w[i]), w1 = VW::set1(w[i + 1]);
      for (int q = 0; q < NV; ++q) {
        acc[q] = VW::fma(w0, VW::load(x0 + q * kW), acc[q]);
        acc2[q] = VW::fma(w1, VW::load(x1 + q * kW), acc2[q]);
      }
    }
    if (i < n) {
      const float* x0 = DENSE ? xs + i * ld : xp + (int64_t)cs[i] * ld;
      const TW w0 = VW::set1(w[i]);
      for (int q = 0; q < NV; ++q) acc[q] = VW::fma(w0, VW::load(x0 + q * kW), acc[q]);
    }
  }
  for (int q = 0; q < NV; ++q) VW::store(tile + q * kW, VW::add(acc[q], acc2[q]));
}

// Dense rows, RB of them at once (register blocking over outputs, as R x 1 blocks): each x vector is
// loaded once for RB weights, so RB * NV FMAs cost NV loads and RB broadcasts instead of RB * (NV + 1).
template <int NV, int RB>
inline void q8_t_rows(const Q8Args& a, int64_t o, const float* xp, float* tile) {
  constexpr int64_t ld = NV * kW;
  alignas(64) float buf[RB][kSeg + 32];
  TW acc[RB][NV];
  for (int r = 0; r < RB; ++r)
    for (int q = 0; q < NV; ++q) acc[r][q] = VW::zero();
  const int64_t s = o * a.ncols, e = s + a.ncols;
  for (int64_t s0 = s; s0 < e; s0 += kSeg) {
    const int64_t n = ((s0 + kSeg) < e ? s0 + kSeg : e) - s0;
    const float* w[RB];
    for (int r = 0; r < RB; ++r) w[r] = q8_dequant(a, s0 + r * a.ncols, s0 + r * a.ncols + n, buf[r]);
    const float* xs = xp + (s0 - s) * ld;
    for (int64_t i = 0; i < n; ++i) {
      TW xv[NV];
      for (int q = 0; q < NV; ++q) xv[q] = VW::load(xs + i * ld + q * kW);
      for (int r = 0; r < RB; ++r) {
        const TW wv = VW::set1(w[r][i]);
        for (int q = 0; q < NV; ++q) acc[r][q] = VW::fma(wv, xv[q], acc[r][q]);
      }
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int q = 0; q < NV; ++q) VW::store(tile + r * kTile + q * kW, acc[r][q]);
}

template <int NV, bool DENSE>
void q8_t_vec(const Q8Args& a, int64_t r0, int64_t r1) {
  // AVX-512 has 32 registers: 4 rows x 4 vectors; AVX2's 16 take 4 x 2 or 2 x 4.
  constexpr int RB = (SC_ISA == 2 || NV <= 2) ? 4 : 2;
  alignas(64) float tile[16 * kTile];
  const int64_t PW = a.PW;
  for (int64_t b0 = 0; b0 < a.B; b0 += PW) {
    const float* xp = a.x + (b0 / PW) * a.in * PW;
    const int64_t nb = (a.B - b0) < PW ? (a.B - b0) : PW;
    for (int64_t o0 = r0; o0 < r1; o0 += 16) {
      const int64_t o1 = (o0 + 16) < r1 ? o0 + 16 : r1;
      int64_t o = o0;
      if (DENSE)
        for (; o + RB <= o1; o += RB) q8_t_rows<NV, RB>(a, o, xp, tile + (o - o0) * kTile);
      for (; o < o1; ++o) q8_t_chunk<NV, DENSE>(a, o, xp, tile + (o - o0) * kTile);
      write_tile(tile, Epi{a.bias, a.res, a.act, a.y, a.out}, o0, o1 - o0, b0, nb);
    }
  }
}

// R x 1 blocks (R = 4 or 8), small batch: a block's R int8 values become one R-lane register (convert,
// times its group's scale), multiplied by the broadcast x value of its column; U independent
// accumulator sets (blocks round robin) hide the FMA latency when the batch gives too few chains.
template <int R> inline typename V<R>::T q8_lanes(const int8_t* q, float scale);
template <> inline __m128 q8_lanes<4>(const int8_t* q, float scale) {
  int32_t bits;
  std::memcpy(&bits, q, 4);
  return _mm_mul_ps(_mm_cvtepi32_ps(_mm_cvtepi8_epi32(_mm_cvtsi32_si128(bits))), _mm_set1_ps(scale));
}
template <> inline __m256 q8_lanes<8>(const int8_t* q, float scale) {
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)q))),
                       _mm256_set1_ps(scale));
}

template <int R, int NB>
void q8b_small_vec(const Q8Args& a, int64_t r0, int64_t r1) {
  using Op = V<R>;
  using T = typename Op::T;
  constexpr int U = NB == 1 ? 4 : (NB == 2 ? 2 : 1);
  alignas(32) float tmp[R];
  for (int64_t br = r0; br < r1; ++br) {
    T acc[U][NB];
    for (int u = 0; u < U; ++u)
      for (int b = 0; b < NB; ++b) acc[u][b] = Op::zero();
    const int32_t e = a.rowptr[br + 1];
    int32_t k = a.rowptr[br];
    auto block = [&](int32_t kk, T* ac) {
      const int64_t k0 = (int64_t)kk * R;
      const T w = q8_lanes<R>(a.q + k0, a.scales[k0 >> a.gshift]);
      const float* xk = a.x + a.cols[kk];
      for (int b = 0; b < NB; ++b) ac[b] = Op::fma(w, Op::set1(xk[b * a.in]), ac[b]);
    };
    for (; k + U <= e; k += U)
      for (int u = 0; u < U; ++u) block(k + u, acc[u]);
    for (; k < e; ++k) block(k, acc[0]);
    for (int u = 1; u < U; ++u)
      for (int b = 0; b < NB; ++b) acc[0][b] = Op::add(acc[0][b], acc[u][b]);
    for (int b = 0; b < NB; ++b) {
      Op::store(tmp, acc[0][b]);
      for (int r = 0; r < R; ++r) {
        const int64_t o = br * R + r;
        if (o >= a.out) break;
        a.y[b * a.out + o] = tmp[r] + (a.bias ? a.bias[o] : 0.f);
      }
    }
  }
}

// R x 1 blocks on token panels: per block one load of NV x vectors feeds R rows of accumulators
// (as t_chunk), the block row's values dequantised into the L1 buffer a segment at a time.
template <int R, int NV>
inline void q8b_t_chunk(const Q8Args& a, int64_t br, const float* xp, float* tile) {
  constexpr int64_t ld = NV * kW;
  constexpr int64_t kBlocks = kSeg / R;
  alignas(64) float buf[kSeg + 32];
  TW acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < NV; ++q) acc[r][q] = VW::zero();
  const int64_t e = a.rowptr[br + 1];
  for (int64_t s0 = a.rowptr[br]; s0 < e; s0 += kBlocks) {
    const int64_t n = ((s0 + kBlocks) < e ? s0 + kBlocks : e) - s0;
    const float* w = q8_dequant(a, s0 * R, (s0 + n) * R, buf);
    for (int64_t i = 0; i < n; ++i) {
      const float* xk = xp + (int64_t)a.cols[s0 + i] * ld;
      TW xv[NV];
      for (int q = 0; q < NV; ++q) xv[q] = VW::load(xk + q * kW);
      for (int r = 0; r < R; ++r) {
        const TW wv = VW::set1(w[i * R + r]);
        for (int q = 0; q < NV; ++q) acc[r][q] = VW::fma(wv, xv[q], acc[r][q]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < NV; ++q) VW::store(tile + r * kTile + q * kW, acc[r][q]);
}

template <int R, int NV>
void q8b_t_vec(const Q8Args& a, int64_t r0, int64_t r1) {
  constexpr int GR = 16 / R;  // block rows per 16-output tile
  alignas(64) float tile[16 * kTile];
  const int64_t PW = a.PW;
  for (int64_t b0 = 0; b0 < a.B; b0 += PW) {
    const float* xp = a.x + (b0 / PW) * a.in * PW;
    const int64_t nb = (a.B - b0) < PW ? (a.B - b0) : PW;
    for (int64_t g0 = r0; g0 < r1; g0 += GR) {
      const int64_t g1 = (g0 + GR) < r1 ? g0 + GR : r1;
      const int64_t o1 = (g1 * R) < a.out ? g1 * R : a.out;
      for (int64_t br = g0; br < g1; ++br) q8b_t_chunk<R, NV>(a, br, xp, tile + (br - g0) * R * kTile);
      write_tile(tile, Epi{a.bias, a.res, a.act, a.y, a.out}, g0 * R, o1 - g0 * R, b0, nb);
    }
  }
}

// NV = PW / kW, at most max_nv(R) (the caller's panel width respects it).
template <int R, int NVMAX>
void q8b_t_r(const Q8Args& a, int64_t r0, int64_t r1) {
  const int64_t nv = a.PW / kW;
  if (nv >= 4 && NVMAX >= 4) return q8b_t_vec<R, (NVMAX >= 4 ? 4 : 1)>(a, r0, r1);
  if (nv >= 2 && NVMAX >= 2) return q8b_t_vec<R, (NVMAX >= 2 ? 2 : 1)>(a, r0, r1);
  q8b_t_vec<R, 1>(a, r0, r1);
}

template <bool DENSE>
void q8_t_nv(const Q8Args& a, int64_t r0, int64_t r1) {
  const int64_t nv = a.PW / kW;
  if (nv >= 4) return q8_t_vec<4, DENSE>(a, r0, r1);
  if (nv >= 2) return q8_t_vec<2, DENSE>(a, r0, r1);
  q8_t_vec<1, DENSE>(a, r0, r1);
}
#endif  // SC_ISA >= 1

// ------------------------------------------------------------------------------------------------
// Entry points: choose the specialization for the shape at run time.
// ------------------------------------------------------------------------------------------------
template <template <int> class F, class Args>
inline void by_batch(const Args& a, int64_t r0, int64_t r1) {
  switch (a.B) {
    case 1: F<1>::run(a, r0, r1); break;
    case 2: F<2>::run(a, r0, r1); break;
    case 3: F<3>::run(a, r0, r1); break;
    default: F<4>::run(a, r0, r1); break;
  }
}

#if SC_ISA >= 1
template <int NB> struct CsrSmall { static void run(const BlockArgs& a, int64_t r0, int64_t r1) { csr_small<NB>(a, r0, r1); } };
template <int R, int CT> struct BlockSmall {
  template <int NB> struct F { static void run(const BlockArgs& a, int64_t r0, int64_t r1) { block_small_vec<R, CT, NB>(a, r0, r1); } };
};
template <int R>
void block_small_r(const BlockArgs& a, int64_t r0, int64_t r1) {
  if (a.C == 1) return by_batch<BlockSmall<R, 1>::template F>(a, r0, r1);
  by_batch<BlockSmall<R, 0>::template F>(a, r0, r1);
}
template <int NB> struct BitSmall { static void run(const BitArgs& a, int64_t r0, int64_t r1) { bit_small_vec<NB>(a, r0, r1); } };
template <int NB> struct NMSmall { static void run(const NMArgs& a, int64_t r0, int64_t r1) { nm_small_vec<NB>(a, r0, r1); } };
#endif

void block_small_body(const BlockArgs& a, int64_t r0, int64_t r1) {
#if SC_ISA >= 1
  if (a.R == 1 && a.C == 1) return by_batch<CsrSmall>(a, r0, r1);
  if (a.R == 4) return block_small_r<4>(a, r0, r1);
  if (a.R == 8) return block_small_r<8>(a, r0, r1);
  if (a.R == 16) return block_small_r<16>(a, r0, r1);
#endif
  block_small_scalar(a, r0, r1);
}

// Output rows [r0 * R, r1 * R) clipped to out: where a block-row range ends among the outputs.
inline int64_t out_end(int64_t r1, int64_t R, int64_t out) { return r1 * R < out ? r1 * R : out; }

void block_small(const BlockArgs& a, int64_t r0, int64_t r1) {
  block_small_body(a, r0, r1);
  epilogue(a.y, a.out, a.B, r0 * a.R, out_end(r1, a.R, a.out), a.res, a.act);
}

void block_t(const BlockArgs& a, int64_t r0, int64_t r1) {
#if SC_ISA == 2
  switch (a.R) {
    case 1: return block_t_r<1, 4>(a, r0, r1);
    case 2: return block_t_r<2, 4>(a, r0, r1);
    case 4: return block_t_r<4, 4>(a, r0, r1);
    case 8: return block_t_r<8, 2>(a, r0, r1);
    case 16: return block_t_r<16, 1>(a, r0, r1);
    default: break;
  }
#elif SC_ISA == 1
  switch (a.R) {
    case 1: return block_t_r<1, 4>(a, r0, r1);
    case 2: return block_t_r<2, 4>(a, r0, r1);
    case 4: return block_t_r<4, 2>(a, r0, r1);
    case 8: return block_t_r<8, 1>(a, r0, r1);
    default: break;
  }
#endif
  block_t_scalar(a, r0, r1);
  epilogue(a.y, a.out, a.B, r0 * a.R, out_end(r1, a.R, a.out), a.res, a.act);
}

void nm_small(const NMArgs& a, int64_t r0, int64_t r1) {
#if SC_ISA >= 1
  if ((2 * kW) % a.M == 0)
    by_batch<NMSmall>(a, r0, r1);
  else
#endif
    nm_small_scalar(a, r0, r1);
  epilogue(a.y, a.out, a.B, r0, r1, a.res, a.act);
}

void bit_small(const BitArgs& a, int64_t r0, int64_t r1) {
#if SC_ISA >= 1
  by_batch<BitSmall>(a, r0, r1);
#else
  bit_small_scalar(a, r0, r1);
#endif
  epilogue(a.y, a.out, a.B, r0, r1, a.res, a.act);
}

void bit_t(const BitArgs& a, int64_t r0, int64_t r1) {
#if SC_ISA >= 1
  const int64_t nv = a.PW / kW;
  if (nv >= 4) return bit_t_vec<4>(a, r0, r1);
  if (nv >= 2) return bit_t_vec<2>(a, r0, r1);
  return bit_t_vec<1>(a, r0, r1);
#else
  bit_t_scalar(a, r0, r1);
  epilogue(a.y, a.out, a.B, r0, r1, a.res, a.act);
#endif
}

void nm_t(const NMArgs& a, int64_t r0, int64_t r1) {
#if SC_ISA >= 1
  const int64_t nv = a.PW / kW;
  if (nv >= 4) return nm_t_vec<4>(a, r0, r1);
  if (nv >= 2) return nm_t_vec<2>(a, r0, r1);
  return nm_t_vec<1>(a, r0, r1);
#else
  nm_t_scalar(a, r0, r1);
  epilogue(a.y, a.out, a.B, r0, r1, a.res, a.act);
#endif
}

#if SC_ISA >= 1
template <int NB> struct Q8SmallCsr { static void run(const Q8Args& a, int64_t r0, int64_t r1) { q8_small_vec<NB, false>(a, r0, r1); } };
template <int NB> struct Q8SmallDense { static void run(const Q8Args& a, int64_t r0, int64_t r1) { q8_small_vec<NB, true>(a, r0, r1); } };
template <int R> struct Q8BlockSmall {
  template <int NB> struct F { static void run(const Q8Args& a, int64_t r0, int64_t r1) { q8b_small_vec<R, NB>(a, r0, r1); } };
};
#endif

void q8_small(const Q8Args& a, int64_t r0, int64_t r1) {
  if (a.R > 1) {
#if SC_ISA >= 1
    if (a.R == 4) by_batch<Q8BlockSmall<4>::template F>(a, r0, r1);
    else if (a.R == 8) by_batch<Q8BlockSmall<8>::template F>(a, r0, r1);
    else
#endif
      q8b_small_rows(a, r0, r1);
    return epilogue(a.y, a.out, a.B, r0 * a.R, out_end(r1, a.R, a.out), a.res, a.act);
  }
#if SC_ISA >= 1
  if (a.rowptr)
    by_batch<Q8SmallCsr>(a, r0, r1);
  else
    by_batch<Q8SmallDense>(a, r0, r1);
#else
  q8_small_scalar(a, r0, r1);
#endif
  epilogue(a.y, a.out, a.B, r0, r1, a.res, a.act);
}

void q8_t(const Q8Args& a, int64_t r0, int64_t r1) {
  if (a.R > 1) {
#if SC_ISA == 2
    if (a.R == 4) return q8b_t_r<4, 4>(a, r0, r1);
    if (a.R == 8) return q8b_t_r<8, 2>(a, r0, r1);
#elif SC_ISA == 1
    if (a.R == 4) return q8b_t_r<4, 2>(a, r0, r1);
    if (a.R == 8) return q8b_t_r<8, 1>(a, r0, r1);
#endif
    q8b_t_scalar(a, r0, r1);
    return epilogue(a.y, a.out, a.B, r0 * a.R, out_end(r1, a.R, a.out), a.res, a.act);
  }
#if SC_ISA >= 1
  if (a.rowptr) return q8_t_nv<false>(a, r0, r1);
  q8_t_nv<true>(a, r0, r1);
#else
  q8_t_scalar(a, r0, r1);
  epilogue(a.y, a.out, a.B, r0, r1, a.res, a.act);
#endif
}

}  // namespace
}  // namespace SC_NS

#if SC_ISA == 0
namespace SC_NS {
namespace {
int max_nv(int) { return 0; }
constexpr int kW = 1;
const PackFn pack_panels = &pack_panels_scalar;
const SddmmFn sddmm = &sddmm_scalar;
const CfFn spmm_cf = &spmm_cf_scalar;
const CfFn block_cf = &block_cf_scalar;
}  // namespace
}  // namespace SC_NS
#else
namespace SC_NS {
namespace {
const PackFn pack_panels = &pack_panels_vec;
const SddmmFn sddmm = &sddmm_vec;
const CfFn spmm_cf = &spmm_cf_vec;
const CfFn block_cf = &block_cf_vec;
}  // namespace
}  // namespace SC_NS
#endif

extern const KernelTable SC_TABLE = {
#if SC_ISA == 2
    "avx512",
#elif SC_ISA == 1
    "avx2",
#else
    "portable",
#endif
    SC_NS::kW, &SC_NS::max_nv, &SC_NS::block_small, &SC_NS::block_t, &SC_NS::nm_small, &SC_NS::nm_t,
    &SC_NS::bit_small, &SC_NS::bit_t, SC_NS::pack_panels, SC_NS::sddmm, SC_NS::spmm_cf,
    SC_NS::block_cf, &SC_NS::q8_small, &SC_NS::q8_t};

}  // namespace sc
