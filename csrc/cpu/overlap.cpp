// OpenMP overlap engine. Plan:
//   1. Pack X once, in panels of 16 rows ([k][16], zero-padded to a multiple of 48 rows):
//      the micro-kernel loads its 16 columns as two vectors and broadcasts its 6 rows from
//      the same panels. Pad the scale with zeros.
//   2. Walk the triangular list of T x T tiles (bi <= bj; a diagonal tile visits only j > i)
//      with a dynamic schedule. A tile is a grid of 6 x 16 micro-tiles computed in registers
//      over the full m, with every reduction fused into the epilogue (overlap_tile.h).
//   3. Per tile, fp32 state (micro-tile sums, per-row and per-column running max/argmax/sum
//      of squares) is folded into per-thread fp64/fixed-point partials; threads are merged
//      at the end.
// Determinism: every c_ij is a pure function of (x_i, x_j, s_i, s_j) (same instruction
// sequence wherever it is computed), per-tile partials depend only on the tile, and all
// cross-tile merges are order-independent (128-bit fixed-point sums, max with ties to the
// smallest index, top-k under a total order). So the result is bitwise identical for any
// thread count and schedule; it does depend on the tile edge T (a function of m) and on the
// micro-kernel (AVX2 vs generic).
#include "cpu/overlap.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>
#ifdef SK_HAVE_OPENMP
#include <omp.h>
#endif

#include "cpu/overlap_tile.h"

namespace sk::cpu {

int num_threads() {
#ifdef SK_HAVE_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

bool has_avx2() {
#ifdef SK_CPU_AVX2
  return true;
#else
  return false;
#endif
}

int64_t default_tile(int64_t m) {
  // Keep one tile's A rows (T x m fp32, re-read for every 16-column strip) within about half
  // of a 512 KiB L2. T is a multiple of 48 = lcm(6, 16) so tiles hold whole panels.
  const int64_t per48 = 48 * 4 * std::max<int64_t>(m, 1);
  return 48 * std::clamp<int64_t>((256 * 1024) / per48, 1, 5);
}

namespace {
using namespace detail;

// dst panel p, element (k, r) = X[p * R + r, k]; rows past N are zero.
inline float bf16_to_float(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;  // bf16 is fp32's upper half
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Widening loads of one element of each storage format (all exact).
struct LoadF32 {
  static float at(const void* X, int64_t i) { return static_cast<const float*>(X)[i]; }
};
struct LoadBF16 {
  static float at(const void* X, int64_t i) {
    return bf16_to_float(static_cast<const uint16_t*>(X)[i]);
  }
};
struct LoadF16 {
  static float at(const void* X, int64_t i) {
    return half_to_float(static_cast<const uint16_t*>(X)[i]);
  }
};

template <int R, class Load>
void pack(const void* X, int64_t N, int64_t rows, int64_t m, float* dst, int nthreads) {
  const int64_t panels = (rows + R - 1) / R;  // rows: N, zero-padded
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t p = 0; p < panels; ++p) {
    float* out = dst + p * R * m;
    for (int r = 0; r < R; ++r) {
      const int64_t row = p * R + r;
      if (row < N) {
        for (int64_t k = 0; k < m; ++k) out[k * R + r] = Load::at(X, row * m + k);
      } else {
        for (int64_t k = 0; k < m; ++k) out[k * R + r] = 0.0f;
      }
    }
  }
}

template <class K, bool HIST, bool TOPK>
void run_tile(const Prob& P, Acc& A, int64_t bi, int64_t bj) {
  const int64_t T = P.T, r0 = bi * T, r1 = std::min(P.N, r0 + T);
  const int64_t c0 = bj * T, c1 = std::min(P.N, c0 + T);
  const int64_t nr = r1 - r0, nc = c1 - c0;
  std::fill(A.rowv.p, A.rowv.p + T * L, -1.0f);
  std::fill(A.rowj.p, A.rowj.p + T * L, -1);
  std::fill(A.rowq.p, A.rowq.p + T * L, 0.0f);
  std::fill(A.colv.p, A.colv.p + T, -1.0f);
  std::fill(A.colj.p, A.colj.p + T, -1);
  std::fill(A.colq.p, A.colq.p + T, 0.0f);
  std::fill(A.tsum.p, A.tsum.p + 12, 0.0);
  // Columns outer, rows inner: the 16-column B strip (16 m floats) stays in L1 while the A
  // panels of the tile stream from L2.
  for (int64_t j0 = c0; j0 < c1; j0 += NR) {
    // The uint32 sub-histograms are flushed before a strip could carry one of them past
    // sub_cap (< 2^32): per strip, not per tile, as one lane can take every pair of a strip
    // and a tile of T rows holds T(T-1)/2 pairs, past 2^32 for T > ~92000.
    const uint64_t strip = static_cast<uint64_t>(nr) * NR;
    if (HIST && A.sub_pairs + strip > A.sub_cap) A.flush_hist(P.bins, P.hsh);
    A.sub_pairs += strip;
    for (int64_t i0 = r0; i0 < r1; i0 += MR) {
      if (i0 + 1 >= std::min(j0 + NR, P.N)) break;  // no pair j > i left in this strip
      const int rl = static_cast<int>(i0 - r0), cl = static_cast<int>(j0 - c0);
      if (i0 + MR <= j0 && j0 + NR <= P.N)
        K::template tile<false, HIST, TOPK>(P, A, i0, j0, rl, cl);
      else
        K::template tile<true, HIST, TOPK>(P, A, i0, j0, rl, cl);
    }
  }
  for (int x = 0; x < 3; ++x) {
    const double* t = A.tsum.p + 4 * x;
    const double s = (t[0] + t[1]) + (t[2] + t[3]);
    if (!fixable(s) || !add_fixed(A.sum[x], to_fixed(s))) A.bad[x] = true;
  }
  for (int64_t r = 0; r < nr; ++r) {  // lanes -> one (max, argmax, sum) per row, fixed order
    const float* v = A.rowv.p + r * L;
    const int32_t* j = A.rowj.p + r * L;
    const float* q = A.rowq.p + r * L;
    int best = -1;
    for (int l = 0; l < L; ++l)
      if (j[l] >= 0 && (best < 0 || v[l] > v[best] || (v[l] == v[best] && j[l] < j[best])))
        best = l;
    if (best >= 0) A.merge_row(r0 + r, v[best], c0 + j[best]);
    A.add_row_sq(r0 + r, ((q[0] + q[1]) + (q[2] + q[3])) + ((q[4] + q[5]) + (q[6] + q[7])));
  }
  for (int64_t c = 0; c < nc; ++c) {
    if (A.colj[c] >= 0) A.merge_row(c0 + c, A.colv[c], r0 + A.colj[c]);
    A.add_row_sq(c0 + c, A.colq[c]);
  }
}

template <class K, bool HIST, bool TOPK>
void run_all(const Prob& P, std::vector<std::unique_ptr<Acc>>& accs, int nthreads) {
  const int64_t nb = (P.N + P.T - 1) / P.T;
  std::vector<int64_t> start(nb + 1, 0);  // index of the first tile of tile-row bi
  for (int64_t b = 0; b < nb; ++b) start[b + 1] = start[b] + (nb - b);
  const int64_t ntiles = start[nb];
  (void)nthreads;
#pragma omp parallel num_threads(nthreads)
  {
#ifdef SK_HAVE_OPENMP
    Acc& A = *accs[omp_get_thread_num()];
#else
    Acc& A = *accs[0];
#endif
    // Dynamic: tiles differ in cost (diagonal ones are half) and the machine may be shared;
    // the result does not depend on which thread runs which tile.
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < ntiles; ++t) {
      const int64_t bi = std::upper_bound(start.begin(), start.end(), t) - start.begin() - 1;
      run_tile<K, HIST, TOPK>(P, A, bi, bi + (t - start[bi]));
    }
  }
}

template <class K>
void dispatch(const Prob& P, std::vector<std::unique_ptr<Acc>>& accs, int nthreads) {
  if (P.bins && P.k) run_all<K, true, true>(P, accs, nthreads);
  else if (P.bins) run_all<K, true, false>(P, accs, nthreads);
  else if (P.k) run_all<K, false, true>(P, accs, nthreads);
  else run_all<K, false, false>(P, accs, nthreads);
}

void merge(const Prob& P, std::vector<std::unique_ptr<Acc>>& accs, int nthreads,
           const OverlapOut& out) {
  i128 sum[3] = {0, 0, 0};
  bool bad[3] = {false, false, false};
  for (auto& a : accs)
    for (int x = 0; x < 3; ++x)
      if (!add_fixed(sum[x], a->sum[x]) || a->bad[x]) bad[x] = true;
  // sum |c| and sum c^2 only grow, so whether they overflow does not depend on the order.
  // sum c may wrap on the way to a total in range (the wrapped bits are still exact): it is
  // valid exactly when sum |c| is, which bounds every partial of it.
  bad[0] = bad[1];
  for (int x = 0; x < 3; ++x) out.sums[x] = bad[x] ? NAN : from_fixed(sum[x]);
  if (P.bins) {
    std::fill(out.hist, out.hist + P.bins, int64_t{0});
    for (auto& a : accs) {
      a->flush_hist(P.bins, P.hsh);
      for (int64_t b = 0; b < P.bins; ++b) out.hist[b] += a->hist[b];
    }
  }
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t i = 0; i < P.N; ++i) {
    Acc& a0 = *accs[0];
    for (size_t t = 1; t < accs.size(); ++t) {
      const Acc& a = *accs[t];
      if (a.rarg[i] >= 0) a0.merge_row(i, a.rmax[i], a.rarg[i]);
      if (!add_fixed(a0.rsq[i], a.rsq[i])) a0.rbad[i] = 1;
      a0.rbad[i] |= a.rbad[i];
    }
    out.row_max[i] = a0.rarg[i] >= 0 ? a0.rmax[i] : NAN;
    out.row_arg[i] = a0.rarg[i];
    out.row_sq[i] = a0.rbad[i] ? NAN : from_fixed(a0.rsq[i]);
  }
  if (P.k) {
    std::vector<Cand> all;
    all.reserve(P.k * accs.size());
    for (auto& a : accs) all.insert(all.end(), a->top.h.begin(), a->top.h.end());
    if (static_cast<int64_t>(all.size()) < P.k)  // only NaN overlaps leave a heap short
      throw std::runtime_error("top-k: " + std::to_string(all.size()) + " candidates for k = " +
                               std::to_string(P.k) + "; the overlaps are not finite");
    std::partial_sort(all.begin(), all.begin() + P.k, all.end(), better);
    for (int64_t t = 0; t < P.k; ++t) {
      out.topk_vals[t] = all[t].c;
      out.topk_pairs[2 * t] = all[t].i;
      out.topk_pairs[2 * t + 1] = all[t].j;
    }
  }
}

}  // namespace

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu, u;
  if (exp == 0x1F) {
    u = sign | 0x7F800000u | (mant << 13);  // inf, NaN (payload kept)
  } else if (exp != 0) {
    u = sign | ((exp + 112) << 23) | (mant << 13);  // rebias 15 -> 127
  } else if (mant == 0) {
    u = sign;  // +-0
  } else {  // subnormal: normalise (value mant * 2^-24)
    exp = 113;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --exp;
    }
    u = sign | (exp << 23) | ((mant & 0x3FFu) << 13);
  }
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

void overlap_partials(const void* X, Format fmt, const float* scale, int64_t N, int64_t m,
                      int64_t bins, int64_t topk, int threads, Kernel kernel, int64_t tile,
                      const OverlapOut& out) {
  if (N < 2) {  // no pairs: zero sums and histogram, NaN / -1 per row
    std::fill(out.sums, out.sums + 3, 0.0);
    std::fill(out.hist, out.hist + bins, int64_t{0});
    std::fill(out.row_max, out.row_max + N, NAN);
    std::fill(out.row_arg, out.row_arg + N, int64_t{-1});
    std::fill(out.row_sq, out.row_sq + N, 0.0);
    return;
  }
  int nthreads = threads > 0 ? threads : num_threads();
#ifdef SK_HAVE_OPENMP
  // Each thread holds O(N + bins) partials: far more threads than processors would only
  // multiply that memory (num_threads=10**6 asked for gigabytes), so at most 4 per processor.
  nthreads = std::min(nthreads, 4 * std::max(1, omp_get_num_procs()));
#endif
  Prob P{};
  P.N = N;
  P.m = m;
  // A tile past the rows changes nothing (one tile either way): clamped, so that a huge
  // tile (the binding takes any multiple of 48) cannot overflow T * T or the buffer sizes.
  P.T = std::min<int64_t>(tile > 0 ? tile : default_tile(m), (N + 47) / 48 * 48);
  P.bins = bins;
  P.k = topk;
  P.hb = static_cast<float>(bins) * 0.5f;
  P.bmax = static_cast<float>(bins - 1);
  P.hsh = bins <= (1 << 16) ? 3 : 0;  // per-lane copies only while they stay cache-sized
  const int64_t nb = (N + P.T - 1) / P.T;
  nthreads = static_cast<int>(std::min<int64_t>(nthreads, nb * (nb + 1) / 2));
  // One packed copy, zero-padded to a multiple of 48 rows (lcm of MR and NR): every micro-tile
  // row and column that a tile touches exists.
  const int64_t padded = (N + 47) / 48 * 48;
  Buf<float> Xp(padded * m);
  Buf<float> s(nb * P.T + NR);
  std::copy(scale, scale + N, s.p);
  std::fill(s.p + N, s.p + nb * P.T + NR, 0.0f);
  if (fmt == Format::kBF16) pack<NR, LoadBF16>(X, N, padded, m, Xp.p, nthreads);
  else if (fmt == Format::kF16) pack<NR, LoadF16>(X, N, padded, m, Xp.p, nthreads);
  else pack<NR, LoadF32>(X, N, padded, m, Xp.p, nthreads);
  P.Xp = Xp.p;
  P.s = s.p;
  std::vector<std::unique_ptr<Acc>> accs;
  for (int t = 0; t < nthreads; ++t) accs.push_back(std::make_unique<Acc>(P));
#ifdef SK_CPU_AVX2
  if (kernel != Kernel::kGeneric) dispatch<Avx2>(P, accs, nthreads);
  else dispatch<Generic>(P, accs, nthreads);
#else
  (void)kernel;
  dispatch<Generic>(P, accs, nthreads);
#endif
  merge(P, accs, nthreads, out);
}

}  // namespace sk::cpu
