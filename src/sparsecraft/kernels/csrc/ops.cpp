// Torch bindings: the sparsecraft::block_linear (CSR and block-CSR), sparsecraft::nm_linear (packed
// N:M), sparsecraft::bitmask_linear and sparsecraft::q8_linear (int8 values, csr16 or dense) operators,
// the run-time ISA choice, and the OpenMP split of output rows across torch's intra-op threads.
#include <torch/extension.h>
#include <torch/library.h>
#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>

#include "kern_common.h"

namespace {

int detect_isa() {
#ifdef SC_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return 2;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
  return 0;
}

int g_isa = -1;

int current_isa() {
  if (g_isa < 0) g_isa = detect_isa();
  return g_isa;
}

const sc::KernelTable& table() {
#ifdef SC_X86
  switch (current_isa()) {
    case 2: return sc::kAvx512;
    case 1: return sc::kAvx2;
    default: break;
  }
#endif
  return sc::kPortable;
}

// Runs f(r0, r1) on torch's thread count, splitting n rows so each thread gets about the same
// number of nonzeros (rowptr) or rows (rowptr == nullptr).
template <class F>
void parallel_rows(int64_t n, const int32_t* rowptr, int64_t work, F f) {
  int nt = at::get_num_threads();
  if (work < (int64_t)1 << 15) nt = 1;
  if (nt > n) nt = (int)std::max<int64_t>(n, 1);
  if (nt <= 1) {
    f((int64_t)0, n);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    auto bound = [&](int i) -> int64_t {
      if (i <= 0) return 0;
      if (i >= T) return n;
      if (!rowptr) return n * i / T;
      const int64_t target = (int64_t)rowptr[n] * i / T;
      return std::lower_bound(rowptr, rowptr + n + 1, (int32_t)target) - rowptr;
    };
    const int64_t r0 = bound(t), r1 = bound(t + 1);
    if (r1 > r0) f(r0, r1);
  }
}

// x (B, in) -> x zero-padded to `cols` columns, contiguous.
torch::Tensor pad_cols(const torch::Tensor& x, int64_t cols) {
  if (x.size(1) == cols) return x;
  auto out = torch::zeros({x.size(0), cols}, x.options());
  out.narrow(1, 0, x.size(1)).copy_(x);
  return out;
}

// Panel width for the transposed path: a multiple of the vector width with at most max_nv(R)
// registers. Small weights (re-read cheaply from L2 for each panel) get the widest panel whose
// x slice (rows x PW floats) fits the budget (SPARSECRAFT_PANEL_KB, default 512 KiB: L2, measured
// faster than L1-sized panels for 16-2048 rows of 384x384, 384x1536, 1536x384); large
// weights get the widest panel so they stream from memory once per PW batch columns.
int64_t panel_width(const sc::KernelTable& tab, int R, int64_t rows, int64_t weight_bytes, int64_t batch) {
  static const int64_t budget = [] {
    const char* env = std::getenv("SPARSECRAFT_PANEL_KB");
    const long kb = env ? std::atol(env) : 0;
    return (int64_t)(kb > 0 ? kb : 512) * 1024;
  }();
  const int nvmax = tab.max_nv(R);
  if (nvmax <= 0 || tab.width <= 1) return 64;
  const int64_t w = tab.width;
  int64_t widest = w * nvmax;
  while (widest > w && widest / 2 >= batch) widest /= 2;  // no wider than the batch needs
  if (weight_bytes > ((int64_t)1 << 20)) return widest;
  int64_t pw = widest;
  while (pw > w && rows * pw * 4 > budget) pw /= 2;
  return pw;
}

// x (B, in) -> Bp/PW panels of xT, each (rows, PW) row-major, zero padding (Bp = B rounded up to
// PW; rows >= in), packed by the ISA's kernel in slices of 64 x-columns split over the threads.
torch::Tensor transpose_panels(const sc::KernelTable& tab, const torch::Tensor& x, int64_t rows, int64_t PW,
                               int64_t Bp) {
  const int64_t B = x.size(0), in = x.size(1);
  auto xt = torch::empty({Bp / PW, rows, PW}, x.options());
  const float* src = x.data_ptr<float>();
  float* dst = xt.data_ptr<float>();
  constexpr int64_t kSlice = 64;
  const int64_t nslices = (rows + kSlice - 1) / kSlice;
  int nt = at::get_num_threads();
  if (rows * Bp < ((int64_t)1 << 16)) nt = 1;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t sl = 0; sl < nslices; ++sl)
    tab.pack_panels(src, B, in, rows, PW, Bp, dst, sl * kSlice, std::min((sl + 1) * kSlice, rows));
  return xt;
}

void check_x(const torch::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu(), "sparsecraft kernels run on the CPU; got x on ", x.device());
  TORCH_CHECK(x.dim() == 2, "x must be 2-D (batch, in_features); got ", x.dim(), "-D");
  TORCH_CHECK(x.scalar_type() == torch::kFloat, "x must be float32; got ", x.scalar_type());
}

const float* bias_ptr(const c10::optional<torch::Tensor>& bias, int64_t out) {
  if (!bias.has_value() || !bias->defined()) return nullptr;
  TORCH_CHECK(bias->scalar_type() == torch::kFloat && bias->numel() == out && bias->is_contiguous(),
              "bias must be a contiguous float32 vector of length ", out);
  return bias->data_ptr<float>();
}

// The epilogue operands: a residual of y's shape (B, out) and the activation code.
void set_epilogue(const c10::optional<torch::Tensor>& residual, int64_t act, int64_t B, int64_t out,
                  const float** res, int* act_out) {
  TORCH_CHECK(act == sc::kActNone || act == sc::kActGelu, "act must be 0 (none) or 1 (gelu), got ", act);
  *act_out = (int)act;
  *res = nullptr;
  if (!residual.has_value() || !residual->defined()) return;
  TORCH_CHECK(residual->scalar_type() == torch::kFloat && residual->is_contiguous() && residual->dim() == 2 &&
                  residual->size(0) == B && residual->size(1) == out,
              "residual must be a contiguous float32 tensor of shape (", B, ", ", out, ")");
  *res = residual->data_ptr<float>();
}

torch::Tensor block_linear(const torch::Tensor& x, const torch::Tensor& rowptr, const torch::Tensor& cols,
                           const torch::Tensor& vals, const c10::optional<torch::Tensor>& bias, int64_t out,
                           int64_t R, int64_t C, const c10::optional<torch::Tensor>& residual, int64_t act) {
  check_x(x);
  TORCH_CHECK(R >= 1 && R <= 16 && C >= 1 && C <= 16, "block shape must lie in 1..16, got ", R, "x", C);
  TORCH_CHECK(rowptr.scalar_type() == torch::kInt && rowptr.is_contiguous(), "rowptr must be contiguous int32");
  TORCH_CHECK(cols.scalar_type() == torch::kShort && cols.is_contiguous(), "cols must be contiguous int16 (uint16 bits)");
  TORCH_CHECK(vals.scalar_type() == torch::kFloat && vals.is_contiguous(), "vals must be contiguous float32");
  const int64_t nbr = (out + R - 1) / R;
  TORCH_CHECK(rowptr.numel() == nbr + 1, "rowptr has ", rowptr.numel(), " entries, expected ", nbr + 1);
  const int64_t nblocks = cols.numel();
  TORCH_CHECK(vals.numel() == nblocks * R * C, "vals/cols size mismatch");
  auto xc = x.contiguous();
  const int64_t B = xc.size(0), in = xc.size(1);
  const int64_t in_pad = (in + C - 1) / C * C;
  auto y = torch::empty({B, out}, x.options());
  if (B == 0 || out == 0) return y;
  sc::BlockArgs a{};
  set_epilogue(residual, act, B, out, &a.res, &a.act);
  a.rowptr = rowptr.data_ptr<int32_t>();
  a.cols = reinterpret_cast<const uint16_t*>(cols.data_ptr<int16_t>());
  a.vals = vals.data_ptr<float>();
  a.bias = bias_ptr(bias, out);
  a.y = y.data_ptr<float>();
  a.B = B;
  a.out = out;
  a.R = (int)R;
  a.C = (int)C;
  const sc::KernelTable& tab = table();
  torch::Tensor xs;
  if (B <= sc::kSmallBatch) {
    xs = pad_cols(xc, in_pad);
    a.x = xs.data_ptr<float>();
    a.in = in_pad;
    a.Bp = B;
    a.PW = 0;
    parallel_rows(nbr, a.rowptr, nblocks * R * C * B, [&](int64_t r0, int64_t r1) { tab.block_small(a, r0, r1); });
  } else {
    const int64_t PW = panel_width(tab, (int)R, in_pad, vals.numel() * 4 + nblocks * 2, B);
    const int64_t Bp = (B + PW - 1) / PW * PW;
    xs = transpose_panels(tab, xc, in_pad, PW, Bp);
    a.x = xs.data_ptr<float>();
    a.in = in_pad;
    a.Bp = Bp;
    a.PW = PW;
    parallel_rows(nbr, a.rowptr, nblocks * R * C * B, [&](int64_t r0, int64_t r1) { tab.block_t(a, r0, r1); });
  }
  return y;
}

torch::Tensor nm_linear(const torch::Tensor& x, const torch::Tensor& vals, const torch::Tensor& idx,
                        const c10::optional<torch::Tensor>& bias, int64_t N, int64_t M,
                        const c10::optional<torch::Tensor>& residual, int64_t act) {
  check_x(x);
  TORCH_CHECK(M >= 1 && M <= 255 && N >= 1 && N <= M, "N:M must satisfy 1 <= N <= M <= 255, got ", N, ":", M);
  TORCH_CHECK(vals.dim() == 2 && vals.scalar_type() == torch::kFloat && vals.is_contiguous(),
              "vals must be a contiguous 2-D float32 tensor");
  TORCH_CHECK(idx.scalar_type() == torch::kByte && idx.is_contiguous() && idx.sizes() == vals.sizes(),
              "idx must be contiguous uint8 with the shape of vals");
  auto xc = x.contiguous();
  const int64_t B = xc.size(0), in = xc.size(1), out = vals.size(0);
  TORCH_CHECK(in % M == 0, "in_features ", in, " is not a multiple of M=", M);
  TORCH_CHECK(vals.size(1) == in / M * N, "vals has ", vals.size(1), " columns, expected ", in / M * N);
  auto y = torch::empty({B, out}, x.options());
  if (B == 0 || out == 0) return y;
  sc::NMArgs a{};
  set_epilogue(residual, act, B, out, &a.res, &a.act);
  a.vals = vals.data_ptr<float>();
  a.idx = idx.data_ptr<uint8_t>();
  a.bias = bias_ptr(bias, out);
  a.y = y.data_ptr<float>();
  a.B = B;
  a.in = in;
  a.out = out;
  a.N = (int)N;
  a.M = (int)M;
  const sc::KernelTable& tab = table();
  torch::Tensor xs;
  const int64_t work = vals.numel() * B;
  if (B <= sc::kSmallBatch) {
    const int64_t xs_cols = (in + 31) / 32 * 32;
    xs = pad_cols(xc, xs_cols);
    a.x = xs.data_ptr<float>();
    a.xs = xs_cols;
    a.Bp = B;
    a.PW = 0;
    parallel_rows(out, nullptr, work, [&](int64_t r0, int64_t r1) { tab.nm_small(a, r0, r1); });
  } else {
    const int64_t PW = panel_width(tab, 1, in, vals.numel() * 5, B);
    const int64_t Bp = (B + PW - 1) / PW * PW;
    xs = transpose_panels(tab, xc, in, PW, Bp);
    a.x = xs.data_ptr<float>();
    a.xs = Bp;
    a.Bp = Bp;
    a.PW = PW;
    parallel_rows(out, nullptr, work, [&](int64_t r0, int64_t r1) { tab.nm_t(a, r0, r1); });
  }
  return y;
}

torch::Tensor bitmask_linear(const torch::Tensor& x, const torch::Tensor& rowptr, const torch::Tensor& masks,
                             const torch::Tensor& vals, const c10::optional<torch::Tensor>& bias,
                             const c10::optional<torch::Tensor>& residual, int64_t act) {
  check_x(x);
  TORCH_CHECK(rowptr.scalar_type() == torch::kInt && rowptr.is_contiguous(), "rowptr must be contiguous int32");
  TORCH_CHECK(masks.dim() == 2 && masks.scalar_type() == torch::kShort && masks.is_contiguous(),
              "masks must be a contiguous 2-D int16 tensor (uint16 bits)");
  TORCH_CHECK(vals.scalar_type() == torch::kFloat && vals.is_contiguous(), "vals must be contiguous float32");
  auto xc = x.contiguous();
  const int64_t B = xc.size(0), in = xc.size(1), out = masks.size(0), ng = masks.size(1);
  TORCH_CHECK(ng == (in + 15) / 16, "masks have ", ng, " groups, expected ", (in + 15) / 16, " for ", in, " inputs");
  TORCH_CHECK(rowptr.numel() == out + 1, "rowptr has ", rowptr.numel(), " entries, expected ", out + 1);
  auto y = torch::empty({B, out}, x.options());
  if (B == 0 || out == 0) return y;
  sc::BitArgs a{};
  set_epilogue(residual, act, B, out, &a.res, &a.act);
  a.rowptr = rowptr.data_ptr<int32_t>();
  a.masks = reinterpret_cast<const uint16_t*>(masks.data_ptr<int16_t>());
  a.vals = vals.data_ptr<float>();
  a.vals_end = a.vals + vals.numel();
  a.bias = bias_ptr(bias, out);
  a.y = y.data_ptr<float>();
  a.B = B;
  a.out = out;
  a.ng = ng;
  const sc::KernelTable& tab = table();
  const int64_t rows = ng * 16;
  torch::Tensor xs;
  const int64_t work = std::max<int64_t>(vals.numel(), out * ng) * B;
  if (B <= sc::kSmallBatch) {
    xs = pad_cols(xc, rows);
    a.x = xs.data_ptr<float>();
    a.xs = rows;
    a.in = rows;
    a.Bp = B;
    a.PW = 0;
    parallel_rows(out, a.rowptr, work, [&](int64_t r0, int64_t r1) { tab.bit_small(a, r0, r1); });
  } else {
    const int64_t PW = panel_width(tab, 1, rows, vals.numel() * 4 + masks.numel() * 2, B);
    const int64_t Bp = (B + PW - 1) / PW * PW;
    xs = transpose_panels(tab, xc, rows, PW, Bp);
    a.x = xs.data_ptr<float>();
    a.xs = Bp;
    a.in = rows;
    a.Bp = Bp;
    a.PW = PW;
    parallel_rows(out, a.rowptr, work, [&](int64_t r0, int64_t r1) { tab.bit_t(a, r0, r1); });
  }
  return y;
}

// y = x W^T + b with W's values int8 with one fp32 scale per `group` consecutive stored values, in csr16
// order (rowptr, cols given, R = 1), R x 1 block-CSR order (R values per col) or dense row-major (both
// absent; in_features values per row).
torch::Tensor q8_linear(const torch::Tensor& x, const c10::optional<torch::Tensor>& rowptr,
                        const c10::optional<torch::Tensor>& cols, const torch::Tensor& q, const torch::Tensor& scales,
                        const c10::optional<torch::Tensor>& bias, int64_t out, int64_t group,
                        const c10::optional<torch::Tensor>& residual, int64_t act, int64_t R) {
  check_x(x);
  TORCH_CHECK(group >= 16 && (group & (group - 1)) == 0, "group must be a power of two >= 16, got ", group);
  TORCH_CHECK(R >= 1 && R <= 16 && (R & (R - 1)) == 0, "R must be a power of two in 1..16, got ", R);
  TORCH_CHECK(q.scalar_type() == torch::kChar && q.is_contiguous() && q.dim() == 1, "q must be contiguous 1-D int8");
  TORCH_CHECK(scales.scalar_type() == torch::kFloat && scales.is_contiguous() && scales.dim() == 1,
              "scales must be contiguous 1-D float32");
  const bool csr = rowptr.has_value() && rowptr->defined();
  TORCH_CHECK(csr == (cols.has_value() && cols->defined()), "give both rowptr and cols (csr16) or neither (dense)");
  TORCH_CHECK(csr || R == 1, "dense rows take R = 1, got ", R);
  auto xc = x.contiguous();
  const int64_t B = xc.size(0), in = xc.size(1);
  const int64_t nrows = (out + R - 1) / R;
  int64_t nnz = out * in;
  sc::Q8Args a{};
  a.R = (int)R;
  if (csr) {
    TORCH_CHECK(rowptr->scalar_type() == torch::kInt && rowptr->is_contiguous() && rowptr->numel() == nrows + 1,
                "rowptr must be contiguous int32 of length ceil(out / R) + 1");
    TORCH_CHECK(cols->scalar_type() == torch::kShort && cols->is_contiguous(),
                "cols must be contiguous int16 (uint16 bits)");
    nnz = cols->numel() * R;
    a.rowptr = rowptr->data_ptr<int32_t>();
    a.cols = reinterpret_cast<const uint16_t*>(cols->data_ptr<int16_t>());
  }
  const int64_t ngroups = (nnz + group - 1) / group;
  TORCH_CHECK(q.numel() == ngroups * group, "q has ", q.numel(), " values, expected ", ngroups * group,
              " (stored values padded to a multiple of the group)");
  TORCH_CHECK(scales.numel() == ngroups, "scales has ", scales.numel(), " entries, expected ", ngroups);
  auto y = torch::empty({B, out}, x.options());
  if (B == 0 || out == 0) return y;
  set_epilogue(residual, act, B, out, &a.res, &a.act);
  a.q = q.data_ptr<int8_t>();
  a.scales = scales.data_ptr<float>();
  a.bias = bias_ptr(bias, out);
  a.y = y.data_ptr<float>();
  a.B = B;
  a.out = out;
  a.ncols = in;
  a.gshift = __builtin_ctzll((unsigned long long)group);
  const sc::KernelTable& tab = table();
  torch::Tensor xs;
  const int64_t work = std::max<int64_t>(nnz, out) * B;
  if (B <= sc::kSmallBatch) {
    a.x = xc.data_ptr<float>();
    a.in = in;
    a.Bp = B;
    a.PW = 0;
    parallel_rows(nrows, a.rowptr, work, [&](int64_t r0, int64_t r1) { tab.q8_small(a, r0, r1); });
  } else {
    const int64_t PW = panel_width(tab, (int)R, in, q.numel() + (csr ? nnz / R * 2 : 0) + scales.numel() * 4, B);
    const int64_t Bp = (B + PW - 1) / PW * PW;
    xs = transpose_panels(tab, xc, in, PW, Bp);
    a.x = xs.data_ptr<float>();
    a.in = in;
    a.Bp = Bp;
    a.PW = PW;
    parallel_rows(nrows, a.rowptr, work, [&](int64_t r0, int64_t r1) { tab.q8_t(a, r0, r1); });
  }
  return y;
}

// The weight gradient at the stored positions: out[k] = (dy^T x)[rows[k], cols[k]], dy (B, out), x (B, in).
torch::Tensor sddmm(const torch::Tensor& dy, const torch::Tensor& x, const torch::Tensor& rows,
                    const torch::Tensor& cols) {
  check_x(x);
  check_x(dy);
  TORCH_CHECK(dy.size(0) == x.size(0), "dy and x must have the same batch, got ", dy.size(0), " and ", x.size(0));
  TORCH_CHECK(rows.scalar_type() == torch::kInt && rows.is_contiguous() && rows.dim() == 1,
              "rows must be a contiguous 1-D int32 tensor");
  TORCH_CHECK(cols.scalar_type() == torch::kInt && cols.is_contiguous() && cols.sizes() == rows.sizes(),
              "cols must be contiguous int32 with the shape of rows");
  const int64_t nnz = rows.numel(), B = x.size(0);
  auto out = torch::empty({nnz}, x.options());
  if (nnz == 0) return out;
  if (B == 0) return out.zero_();
  const int32_t* r = rows.data_ptr<int32_t>();
  const int32_t* c = cols.data_ptr<int32_t>();
  TORCH_CHECK(*std::min_element(r, r + nnz) >= 0 && *std::max_element(r, r + nnz) < dy.size(1),
              "rows must lie in [0, ", dy.size(1), ")");
  TORCH_CHECK(*std::min_element(c, c + nnz) >= 0 && *std::max_element(c, c + nnz) < x.size(1),
              "cols must lie in [0, ", x.size(1), ")");
  auto gt = dy.t().contiguous();
  auto xt = x.t().contiguous();
  sc::SddmmArgs a{gt.data_ptr<float>(), xt.data_ptr<float>(), r, c, out.data_ptr<float>(), B};
  const sc::KernelTable& tab = table();
  parallel_rows(nnz, nullptr, nnz * B, [&](int64_t k0, int64_t k1) { tab.sddmm(a, k0, k1); });
  return out;
}

// Direct sparse convolution, channels first: y[n, o, p] = sum_k vals[k] x[n, xoff[k] + p] + bias[o] for p < P,
// x (N, L) one flattened (zero-padded) input per image, W in CSR over the outputs -> y (N, out, P).
// R > 1: W is R x 1 block-CSR, rowptr over ceil(out / R) block rows, one xoff and R vals per block.
torch::Tensor conv_cf(const torch::Tensor& x, const torch::Tensor& rowptr, const torch::Tensor& xoff,
                      const torch::Tensor& vals, const c10::optional<torch::Tensor>& bias, int64_t out, int64_t P,
                      int64_t R) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat && x.dim() == 2,
              "x must be a float32 CPU tensor (batch, flattened input)");
  TORCH_CHECK(R >= 1 && R <= 16, "R must be in [1, 16], got ", R);
  const int64_t nrows = (out + R - 1) / R;
  TORCH_CHECK(rowptr.scalar_type() == torch::kInt && rowptr.is_contiguous() && rowptr.numel() == nrows + 1,
              "rowptr must be contiguous int32 of length ceil(out / R) + 1");
  TORCH_CHECK(xoff.scalar_type() == torch::kInt && xoff.is_contiguous(), "xoff must be contiguous int32");
  TORCH_CHECK(vals.scalar_type() == torch::kFloat && vals.is_contiguous() && vals.numel() == xoff.numel() * R,
              "vals must be contiguous float32 with R values per offset");
  TORCH_CHECK(P >= 0, "P must be >= 0");
  auto xc = x.contiguous();
  const int64_t N = xc.size(0), L = xc.size(1), nnz = xoff.numel();
  auto y = torch::empty({N, out, P}, x.options());
  if (N == 0 || out == 0 || P == 0) return y;
  const int32_t* rp = rowptr.data_ptr<int32_t>();
  TORCH_CHECK(rp[0] == 0 && rp[nrows] == nnz, "rowptr must run from 0 to the number of offsets");
  const int32_t* off = xoff.data_ptr<int32_t>();
  if (nnz) {
    TORCH_CHECK(*std::min_element(off, off + nnz) >= 0 && *std::max_element(off, off + nnz) + P <= L,
                "offsets + P must lie within the ", L, " input values of an image");
  }
  sc::CfArgs a{};
  a.rowptr = rp;
  a.xoff = off;
  a.vals = vals.data_ptr<float>();
  a.bias = bias_ptr(bias, out);
  a.P = P;
  a.out = out;
  a.R = (int)R;
  const sc::KernelTable& tab = table();
  const sc::CfFn fn = R == 1 ? tab.spmm_cf : tab.block_cf;
  const float* xs = xc.data_ptr<float>();
  float* ys = y.data_ptr<float>();
  for (int64_t n = 0; n < N; ++n) {
    sc::CfArgs an = a;
    an.x = xs + n * L;
    an.y = ys + n * out * P;
    parallel_rows(nrows, a.rowptr, std::max<int64_t>(nnz * R, out) * P, [&](int64_t r0, int64_t r1) { fn(an, r0, r1); });
  }
  return y;
}

int64_t set_isa(int64_t isa) {
  TORCH_CHECK(isa >= 0 && isa <= detect_isa(), "ISA level ", isa, " is not supported by this CPU (max ",
              detect_isa(), ")");
  g_isa = (int)isa;
  return g_isa;
}

}  // namespace

TORCH_LIBRARY(sparsecraft, m) {
  m.def("block_linear(Tensor x, Tensor rowptr, Tensor cols, Tensor vals, Tensor? bias, int out_features, int R, int C, "
        "Tensor? residual=None, int act=0) -> Tensor");
  m.def("nm_linear(Tensor x, Tensor vals, Tensor idx, Tensor? bias, int N, int M, Tensor? residual=None, int act=0) "
        "-> Tensor");
  m.def("bitmask_linear(Tensor x, Tensor rowptr, Tensor masks, Tensor vals, Tensor? bias, Tensor? residual=None, "
        "int act=0) -> Tensor");
  m.def("q8_linear(Tensor x, Tensor? rowptr, Tensor? cols, Tensor q, Tensor scales, Tensor? bias, int out_features, "
        "int group, Tensor? residual=None, int act=0, int R=1) -> Tensor");
  m.def("sddmm(Tensor dy, Tensor x, Tensor rows, Tensor cols) -> Tensor");
  m.def("conv_cf(Tensor x, Tensor rowptr, Tensor xoff, Tensor vals, Tensor? bias, int out_channels, int P, int R=1) "
        "-> Tensor");
}

TORCH_LIBRARY_IMPL(sparsecraft, CPU, m) {
  m.impl("block_linear", &block_linear);
  m.impl("nm_linear", &nm_linear);
  m.impl("bitmask_linear", &bitmask_linear);
  m.impl("q8_linear", &q8_linear);
  m.impl("sddmm", &sddmm);
  m.impl("conv_cf", &conv_cf);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
  mod.def("cpu_isa", &detect_isa, "Best ISA level this CPU supports: 0 portable, 1 avx2, 2 avx512.");
  mod.def("get_isa", &current_isa, "ISA level the kernels use now.");
  mod.def("set_isa", &set_isa, "Force an ISA level no higher than cpu_isa().");
}
