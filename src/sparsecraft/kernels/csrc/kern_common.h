// Shared declarations for the sparsecraft CPU kernels.
//
// The hot loops live in kern_impl.h, which is compiled three times (kern_avx512.cpp,
// kern_avx2.cpp, kern_portable.cpp) with a different target ISA each. This header is included
// BEFORE any target pragma, and the ISA translation units use only intrinsics and plain C++ with
// internal linkage (no std templates, no torch headers), so no inline function compiled for a
// wider ISA can be picked up by the linker for a machine that lacks it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define SC_X86 1
#endif

namespace sc {

// y = x W^T + b with W in block-CSR form: R x C blocks (R = C = 1 is plain CSR).
// Values of one block are stored column-major: vals[k*R*C + c*R + r].
struct BlockArgs {
  const float* x;          // small batch: (B, in) row-major; transposed path: panels of xT, see PW
  const int32_t* rowptr;   // (number of block rows + 1)
  const uint16_t* cols;    // block-column index of each block
  const float* vals;       // (nblocks, C, R)
  const float* bias;       // (out) or nullptr
  float* y;                // (B, out) row-major
  const float* res;        // epilogue: (B, out) added after the bias, or nullptr
  int act;                 // epilogue: then kActGelu or kActNone
  int64_t B, Bp, in, out;  // in: row stride of x (small path) or rows of xT (a multiple of C)
  int64_t PW;              // transposed path: xT is stored as Bp/PW panels of (in, PW), PW | Bp
  int R, C;
};

// y = x W^T + b with W in packed N:M form: per row (in/M)*N values, idx = position in group.
struct NMArgs {
  const float* x;          // small batch: (B, xs) row-major, zero-padded; transposed: panels (in, PW)
  const float* vals;       // (out, in/M*N)
  const uint8_t* idx;      // (out, in/M*N), each in [0, M)
  const float* bias;       // (out) or nullptr
  float* y;                // (B, out)
  const float* res;        // epilogue, as in BlockArgs
  int act;
  int64_t B, Bp, in, out, xs;
  int64_t PW;
  int N, M;
};

// y = x W^T + b with W as per-row bitmasks: for each row and each group of 16 inputs a uint16 mask
// of its nonzeros; the values of a row are stored in column order starting at rowptr[row].
struct BitArgs {
  const float* x;          // small batch: (B, xs) zero-padded to a multiple of 16; transposed: panels
  const int32_t* rowptr;   // (out + 1) value offsets
  const uint16_t* masks;   // (out, ng) with ng = ceil(in / 16)
  const float* vals;       // (nnz)
  const float* vals_end;
  const float* bias;
  float* y;
  const float* res;        // epilogue, as in BlockArgs
  int act;
  int64_t B, Bp, in, out, xs, ng;
  int64_t PW;
};

// Sampled dense-dense product (SDDMM) for the weight gradient of y = x W^T at W's stored positions:
// out[k] = sum_b gt[rows[k], b] * xt[cols[k], b], i.e. (dy^T x)[rows[k], cols[k]].
struct SddmmArgs {
  const float* gt;         // (out, B) row-major: dy transposed
  const float* xt;         // (in, B) row-major: x transposed
  const int32_t* rows;     // (nnz) output index of each stored weight
  const int32_t* cols;     // (nnz) input index of each stored weight
  float* out;              // (nnz)
  int64_t B;
};

// Channels-first sparse x dense product: the direct sparse convolution over pixels ("Fast Sparse
// ConvNets", Elsen et al. 2019), for one image: y[o, p] = sum_k vals[k] x[xoff[k] + p] + bias[o],
// p < P. W (out, in * kernel) is CSR over the outputs; each nonzero's xoff is where its input channel
// and kernel position start in the image's (zero-padded, flattened) input, so a pointwise conv has
// xoff = channel * P and a k x k conv adds the kernel position's shift (outputs on the padded-width grid).
// With R > 1 (the fine-grained kernel-group pattern of SparseByteNN, Xu et al. 2023) W is R x 1
// block-CSR: rowptr runs over blocks of R outputs, each stored block has one xoff (its input channel
// and kernel position) and R values, so one load of an input pixel panel feeds R output rows.
struct CfArgs {
  const float* x;          // one image's input, flattened
  const int32_t* rowptr;   // (out + 1), or (ceil(out / R) + 1) for blocks
  const int32_t* xoff;     // (nnz), or (nblocks)
  const float* vals;       // (nnz), or (nblocks, R): each block's R outputs contiguous
  const float* bias;       // (out) or nullptr
  float* y;                // (out, P) row-major
  int64_t P;
  int64_t out;             // output channels (blocks: the last block row may be partial)
  int R;                   // outputs per block (1: CSR)
};

// y = x W^T + b with W's values stored as symmetric int8 and one fp32 scale per group of G consecutive
// stored values (weight-only quantization, after GQSA, Zeng et al. 2024): w_k = scales[k / G] * q[k].
// The stored order is csr16's (row-major nonzeros; rowptr and cols given, R = 1), R x 1 block-CSR's
// (rowptr over block rows, one col per block, its R values contiguous; R = 4 or 8 vectorized) or dense
// row-major (rowptr and cols null, ncols values per row). q is zero-padded to a multiple of G, G a power of two >= 16, so
// every aligned run of 16 values has one scale (scales[k >> gshift]) and can be read whole: the kernels
// dequantise 16 at a time (int8 -> int32 -> fp32, times the scale) in registers (small batch) or into a
// small L1 buffer that the fp32 inner loop broadcasts from (transposed path).
struct Q8Args {
  const float* x;          // small batch: (B, in) row-major; transposed path: panels of xT, as BlockArgs
  const int32_t* rowptr;   // (out + 1), or nullptr: dense rows
  const uint16_t* cols;    // (nnz), or nullptr: dense rows
  const int8_t* q;         // (ceil(nnz / G) * G)
  const float* scales;     // (ceil(nnz / G))
  const float* bias;       // (out) or nullptr
  float* y;                // (B, out)
  const float* res;        // epilogue, as in BlockArgs
  int act;
  int64_t B, Bp, in, out;  // in: row stride of x (small path) or rows of xT
  int64_t PW;
  int64_t ncols;           // dense: values per row (in_features)
  int gshift;              // G = 1 << gshift
  int R;                   // outputs per block (1: csr16 or dense), a power of two <= 16
};

// Epilogues fused into the kernels: y = act(x W^T + b [+ res]).
constexpr int kActNone = 0;
constexpr int kActGelu = 1;  // exact (erf) GELU, to ~1e-6

// x (B, in) row-major -> PW-wide panels of xT, dst[p] (rows, PW) with dst[p][c][j] = x[p*PW + j][c]
// (zero past B or in), for the x-columns [c0, c1).
using PackFn = void (*)(const float* x, int64_t B, int64_t in, int64_t rows, int64_t PW, int64_t Bp, float* dst,
                        int64_t c0, int64_t c1);

using BlockFn = void (*)(const BlockArgs&, int64_t, int64_t);
using BitFn = void (*)(const BitArgs&, int64_t, int64_t);
using NMFn = void (*)(const NMArgs&, int64_t, int64_t);
using SddmmFn = void (*)(const SddmmArgs&, int64_t, int64_t);  // stored weights [k0, k1)
using CfFn = void (*)(const CfArgs&, int64_t, int64_t);        // output channels (block rows) [r0, r1)
using Q8Fn = void (*)(const Q8Args&, int64_t, int64_t);

// One set of kernels per ISA; each processes output (block) rows [r0, r1).
struct KernelTable {
  const char* name;
  int width;                 // floats per vector register (1: scalar)
  int (*max_nv)(int R);      // most registers of batch per block row on the transposed path (0: any)
  BlockFn block_small;  // B <= 4
  BlockFn block_t;      // B > 4, x transposed
  NMFn nm_small;
  NMFn nm_t;
  BitFn bit_small;
  BitFn bit_t;
  PackFn pack_panels;
  SddmmFn sddmm;
  CfFn spmm_cf;
  CfFn block_cf;        // R x 1 blocks (R = 4 or 8 vectorized, any R scalar)
  Q8Fn q8_small;        // int8 values, csr16 or dense order, B <= 4
  Q8Fn q8_t;            // int8 values, B > 4, x transposed
};

extern const KernelTable kPortable;
#ifdef SC_X86
extern const KernelTable kAvx2;
extern const KernelTable kAvx512;
#endif

constexpr int kSmallBatch = 4;  // largest batch handled without transposing x

}  // namespace sc
