// Internal to overlap.cpp: per-thread accumulators and the two micro-kernels (6 x 16 pairs with
// the reductions fused in; no tile is ever written to memory). Not a public header.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SK_CPU_AVX2 1
#endif

namespace sk::cpu::detail {

constexpr int MR = 6;   // rows of a micro-tile (A side, broadcast from the [k][16] panels)
constexpr int NR = 16;  // columns of a micro-tile (B side, two 8-float vectors of a [k][16] panel)
constexpr int L = 8;    // lanes of the running per-row state (one AVX2 vector)
using i128 = __int128;

// 128-bit fixed point with 2^-64 resolution for every cross-tile sum: integer addition is
// associative, so per-tile partials merged in any order (any thread count, any schedule) give
// the same bits, and the merge itself adds no rounding error. Each addend is below 2^62, and
// a total stays below 2^63 (i128's range) while |c| <= 1 (the public op's unit rows: at most
// 2^63 pairs); raw scales through the low-level binding can pass it, which add_fixed reports.
inline bool fixable(double v) { return std::fabs(v) < 0x1p62; }  // false for NaN/Inf too
// Rounded to nearest (not truncated toward zero), so tiny sums lose no systematic bias.
inline i128 to_fixed(double v) { return static_cast<i128>(std::nearbyint(v * 0x1p64)); }
inline double from_fixed(i128 v) { return static_cast<double>(v) * 0x1p-64; }
// acc += v, wrapping (defined behaviour, and associative, so the bits stay order-independent);
// returns false when the true sum left i128. A sum of non-negative terms only grows, so
// whether it overflows does not depend on the order; a signed sum is bounded by its absolute
// counterpart, so it is valid whenever that one is.
inline bool add_fixed(i128& acc, i128 v) { return !__builtin_add_overflow(acc, v, &acc); }

template <class T>
struct Buf {  // 64-byte aligned array: aligned AVX loads, no false sharing between threads
  T* p = nullptr;
  Buf() = default;
  explicit Buf(size_t n) {
    if (n == 0) return;
    if (n > (SIZE_MAX - 63) / sizeof(T)) throw std::bad_alloc();  // the byte count would wrap
    p = static_cast<T*>(std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64));
    if (!p) throw std::bad_alloc();
  }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  Buf(Buf&& o) noexcept : p(o.p) { o.p = nullptr; }
  Buf& operator=(Buf&& o) noexcept { std::swap(p, o.p); return *this; }
  ~Buf() { std::free(p); }
  T& operator[](size_t i) const { return p[i]; }
};

struct Cand {  // one top-k candidate pair
  float a, c;  // |c| and c
  int64_t i, j;
};
// The canonical order: |c| descending, then i ascending, then j ascending (a total order).
inline bool better(const Cand& x, const Cand& y) {
  if (x.a != y.a) return x.a > y.a;
  return x.i != y.i ? x.i < y.i : x.j < y.j;
}

struct TopK {  // bounded heap of the best k seen; front() is the worst kept
  int64_t k = 0;
  std::vector<Cand> h;  // capacity reserved up front: no allocation inside the parallel region
  float threshold() const {
    return static_cast<int64_t>(h.size()) < k ? -INFINITY : h.front().a;
  }
  // Whether a pair (i, j) >= (i0, j0) could beat the minimum on a tie of |c|.
  bool may_win_tie(int64_t i0, int64_t j0) const {
    if (static_cast<int64_t>(h.size()) < k) return true;
    const Cand& w = h.front();
    return i0 < w.i || (i0 == w.i && j0 < w.j);
  }
  void offer(const Cand& x) {
    if (static_cast<int64_t>(h.size()) < k) {
      h.push_back(x);
      std::push_heap(h.begin(), h.end(), better);
    } else if (better(x, h.front())) {
      std::pop_heap(h.begin(), h.end(), better);
      h.back() = x;
      std::push_heap(h.begin(), h.end(), better);
    }
  }
};

struct Prob {          // read-only problem description shared by all threads
  const float* Xp;     // rows packed in panels of NR: panel p holds [k][NR] (both sides read it)
  const float* s;      // scale, zero-padded past N
  int64_t N, m, T, bins, k;
  float hb, bmax;      // bins * 0.5f and bins - 1 (fp32, as hist_bins() in overlap_ref.py)
  int hsh;             // log2 of the sub-histograms per thread: 3 (one per lane) or 0 (huge bins)
};

struct Acc {  // everything one thread accumulates; tile scratch is reset for every tile
  // Tile scratch. Row state: per tile row, L lanes of running (max |c|, local j, sum c^2);
  // lane l sees the columns j = 8h + l of each micro-tile, visited in increasing j.
  Buf<float> rowv, rowq;
  Buf<int32_t> rowj;
  Buf<float> colv, colq;  // column state: per tile column, (max |c|, local i, sum c^2)
  Buf<int32_t> colj;
  Buf<double> tsum;       // [3][4]: sum c, |c|, c^2 of the tile in fp64 (fp32 per micro-tile)
  // Partials over all tiles this thread ran.
  i128 sum[3] = {0, 0, 0};
  bool bad[3] = {false, false, false};  // per sum: a non-finite partial (non-finite inputs)
                                        // or a total past the fixed-point range (raw scales)
  Buf<uint32_t> sub;      // [(bins + 1) << hsh]: per-lane histograms (+ a trash bin)
  uint64_t sub_pairs = 0; // pairs counted in sub since the last flush
  uint64_t sub_cap;       // flush before exceeding: < 2^32 (uint32 counters), and rare enough
                          // that flushing costs at most 1/64 of the increments it folds
  std::vector<int64_t> hist;
  Buf<float> rmax;
  Buf<int64_t> rarg;
  Buf<i128> rsq;
  Buf<uint8_t> rbad;
  TopK top;

  Acc(const Prob& P)
      : rowv(P.T * L), rowq(P.T * L), rowj(P.T * L), colv(P.T), colq(P.T), colj(P.T), tsum(12),
        sub(P.bins ? (P.bins + 1) << P.hsh : 0), hist(P.bins, 0), rmax(P.N), rarg(P.N), rsq(P.N),
        rbad(P.N) {
    sub_cap = std::min<uint64_t>(0xFFFFFFFFull, std::max<uint64_t>(1u << 20, 512 * (P.bins + 1)));
    std::fill(rmax.p, rmax.p + P.N, -1.0f);
    std::fill(rarg.p, rarg.p + P.N, int64_t{-1});
    std::fill(rsq.p, rsq.p + P.N, i128{0});
    std::fill(rbad.p, rbad.p + P.N, uint8_t{0});
    if (P.bins) std::fill(sub.p, sub.p + ((P.bins + 1) << P.hsh), 0u);
    top.k = P.k;
    top.h.reserve(P.k);
  }
  void flush_hist(int64_t bins, int hsh) {
    for (int64_t b = 0; b < bins; ++b) {
      int64_t n = 0;
      for (int l = 0; l < (1 << hsh); ++l) n += sub[(b << hsh) + l];
      hist[b] += n;
    }
    std::fill(sub.p, sub.p + ((bins + 1) << hsh), 0u);
    sub_pairs = 0;
  }
  // Running (max, argmax) with ties to the smaller index: order-independent, hence canonical.
  void merge_row(int64_t i, float v, int64_t j) {
    if (rarg[i] < 0 || v > rmax[i] || (v == rmax[i] && j < rarg[i])) {
      rmax[i] = v;
      rarg[i] = j;
    }
  }
  void add_row_sq(int64_t i, float q) {
    if (q == 0.0f) return;
    if (!fixable(q) || !add_fixed(rsq[i], to_fixed(q))) rbad[i] = 1;
  }
};

// The A side of a micro-tile (rows i0 .. i0 + 5) is read from the same [k][NR] panels as the
// B side: row i0 + r sits at offset off[r] from row i0's slot, r within its panel, or in the
// next panel (NR m floats on) when the six rows straddle a panel boundary. One packed copy of
// the rows instead of two; the arithmetic, and so every bit, is unchanged.
inline void a_offsets(const Prob& P, int64_t i0, int64_t off[MR]) {
  const int64_t slot = i0 % NR;
  for (int r = 0; r < MR; ++r) off[r] = slot + r < NR ? r : r - NR + NR * P.m;
}

// Portable micro-kernel: plain loops (the compiler vectorises the 16 columns), scalar epilogue
// with the same tie semantics as the SIMD one.
struct Generic {
  template <bool MASK, bool HIST, bool TOPK>
  static void tile(const Prob& P, Acc& A, int64_t i0, int64_t j0, int rl, int cl) {
    const float* a = P.Xp + (i0 / NR) * NR * P.m + i0 % NR;
    const float* b = P.Xp + (j0 / NR) * NR * P.m;
    int64_t off[MR];
    a_offsets(P, i0, off);
    float c[MR][NR] = {};
    for (int64_t k = 0; k < P.m; ++k, a += NR, b += NR)
      for (int r = 0; r < MR; ++r)
        for (int q = 0; q < NR; ++q) c[r][q] += a[off[r]] * b[q];
    double s1 = 0, s2 = 0, s3 = 0;  // scalar order: fp64 keeps it as accurate as the SIMD tree
    for (int r = 0; r < MR; ++r) {
      for (int q = 0; q < NR; ++q) {
        const int64_t i = i0 + r, j = j0 + q;
        if (MASK && !(i < j && j < P.N)) continue;
        const float v = c[r][q] * P.s[i] * P.s[j], av = std::fabs(v), v2 = v * v;
        s1 += v;
        s2 += av;
        s3 += v2;
        const int64_t rs = (rl + r) * L + q % L;  // strict > with increasing j: first j wins
        if (av > A.rowv[rs]) { A.rowv[rs] = av; A.rowj[rs] = cl + q; }
        A.rowq[rs] += v2;
        if (av > A.colv[cl + q]) { A.colv[cl + q] = av; A.colj[cl + q] = rl + r; }
        A.colq[cl + q] += v2;
        if (HIST) {
          float t = (v + 1.0f) * P.hb;
          t = t > 0.0f ? std::min(t, P.bmax) : 0.0f;  // floor == truncation here; NaN -> 0
          ++A.sub[static_cast<int64_t>(t) << P.hsh];
        }
        if (TOPK && av >= A.top.threshold()) A.top.offer({av, v, i, j});
      }
    }
    A.tsum[0] += s1;
    A.tsum[4] += s2;
    A.tsum[8] += s3;
  }
};

#ifdef SK_CPU_AVX2
struct Avx2 {
  static inline void add_pd(double* dst, __m256 v) {  // dst[0:4] += 8 fp32 lanes, in fp64
    const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    _mm256_store_pd(dst, _mm256_add_pd(_mm256_load_pd(dst), _mm256_add_pd(lo, hi)));
  }

  // The dot products of a micro-tile: 12 accumulators + 2 B vectors + 1 broadcast, 15 of the
  // 16 ymm registers. SPLIT: the six rows straddle two panels (offsets off[r]); else row r is
  // at a + r, an immediate offset.
  template <bool SPLIT>
  static inline __attribute__((always_inline)) void dots(
      const float* a, const float* b, int64_t m, const int64_t* off, __m256 (&c)[MR][2]) {
#pragma GCC unroll 4
    for (int64_t k = 0; k < m; ++k, a += NR, b += NR) {
      const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
      for (int r = 0; r < MR; ++r) {
        const __m256 ar = _mm256_broadcast_ss(a + (SPLIT ? off[r] : r));
        c[r][0] = _mm256_fmadd_ps(ar, b0, c[r][0]);
        c[r][1] = _mm256_fmadd_ps(ar, b1, c[r][1]);
      }
    }
  }

  template <bool MASK, bool HIST, bool TOPK>
  static void tile(const Prob& P, Acc& A, int64_t i0, int64_t j0, int rl, int cl) {
    const float* a = P.Xp + (i0 / NR) * NR * P.m + i0 % NR;
    const float* b = P.Xp + (j0 / NR) * NR * P.m;
    __m256 c[MR][2];
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) c[r][0] = c[r][1] = _mm256_setzero_ps();
    if (i0 % NR + MR <= NR) {
      dots<false>(a, b, P.m, nullptr, c);
    } else {
      int64_t off[MR];
      a_offsets(P, i0, off);
      dots<true>(a, b, P.m, off, c);
    }
    // Epilogue. c = (dot * s_i) * s_j, the reference's order; masked pairs get c = 0, |c| = -1.
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i col[2] = {iota, _mm256_add_epi32(iota, _mm256_set1_epi32(8))};
    const __m256 sj[2] = {_mm256_loadu_ps(P.s + j0), _mm256_loadu_ps(P.s + j0 + 8)};
    const __m256 sign = _mm256_set1_ps(-0.0f), neg1 = _mm256_set1_ps(-1.0f);
    __m256 am[MR][2];
    __m256i ok[MR][2];
    const int lim = static_cast<int>(std::min<int64_t>(P.N - j0, NR));  // columns that exist
    const int d = static_cast<int>(std::clamp<int64_t>(j0 - i0, -NR, NR));  // i < j <=> q+d > r
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m256 si = _mm256_broadcast_ss(P.s + i0 + r);
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        c[r][h] = _mm256_mul_ps(_mm256_mul_ps(c[r][h], si), sj[h]);
        const __m256 av = _mm256_andnot_ps(sign, c[r][h]);
        if (MASK) {
          ok[r][h] = _mm256_and_si256(
              _mm256_cmpgt_epi32(_mm256_add_epi32(col[h], _mm256_set1_epi32(d - r)),
                                 _mm256_setzero_si256()),
              _mm256_cmpgt_epi32(_mm256_set1_epi32(lim), col[h]));
          const __m256 okf = _mm256_castsi256_ps(ok[r][h]);
          c[r][h] = _mm256_and_ps(c[r][h], okf);
          am[r][h] = _mm256_blendv_ps(neg1, av, okf);
        } else {
          am[r][h] = av;
        }
      }
    }
    // Global sums: fp32 over the 96 pairs, then fp64 across micro-tiles.
    __m256 s1 = _mm256_setzero_ps(), s2 = s1, s3 = s1;
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        s1 = _mm256_add_ps(s1, c[r][h]);
        s2 = _mm256_add_ps(s2, _mm256_andnot_ps(sign, c[r][h]));
        s3 = _mm256_fmadd_ps(c[r][h], c[r][h], s3);
      }
    add_pd(A.tsum.p, s1);
    add_pd(A.tsum.p + 4, s2);
    add_pd(A.tsum.p + 8, s3);
    // Row state: fold the two halves (ties keep the smaller j), then strict > against the state,
    // which only holds smaller j: the first maximal j wins in every lane.
    const __m256i jl0 = _mm256_add_epi32(col[0], _mm256_set1_epi32(cl));
    const __m256i jl1 = _mm256_add_epi32(col[1], _mm256_set1_epi32(cl));
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      float* sv = A.rowv.p + (rl + r) * L;
      float* sq = A.rowq.p + (rl + r) * L;
      int32_t* sjx = A.rowj.p + (rl + r) * L;
      const __m256 gt = _mm256_cmp_ps(am[r][1], am[r][0], _CMP_GT_OQ);
      const __m256 v = _mm256_blendv_ps(am[r][0], am[r][1], gt);
      const __m256 jv = _mm256_blendv_ps(_mm256_castsi256_ps(jl0), _mm256_castsi256_ps(jl1), gt);
      const __m256 old = _mm256_load_ps(sv);
      const __m256 up = _mm256_cmp_ps(v, old, _CMP_GT_OQ);
      _mm256_store_ps(sv, _mm256_blendv_ps(old, v, up));
      const __m256 oldj = _mm256_load_ps(reinterpret_cast<const float*>(sjx));
      _mm256_store_ps(reinterpret_cast<float*>(sjx), _mm256_blendv_ps(oldj, jv, up));
      const __m256 q = _mm256_fmadd_ps(c[r][1], c[r][1], _mm256_mul_ps(c[r][0], c[r][0]));
      _mm256_store_ps(sq, _mm256_add_ps(_mm256_load_ps(sq), q));
    }
    // Column state: rows in increasing i with strict >, the first maximal i wins.
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      __m256 v = am[0][h];
      __m256 iv = _mm256_castsi256_ps(_mm256_set1_epi32(rl));
      __m256 q = _mm256_mul_ps(c[0][h], c[0][h]);
#pragma GCC unroll 5
      for (int r = 1; r < MR; ++r) {
        const __m256 gt = _mm256_cmp_ps(am[r][h], v, _CMP_GT_OQ);
        v = _mm256_blendv_ps(v, am[r][h], gt);
        iv = _mm256_blendv_ps(iv, _mm256_castsi256_ps(_mm256_set1_epi32(rl + r)), gt);
        q = _mm256_fmadd_ps(c[r][h], c[r][h], q);
      }
      float* sv = A.colv.p + cl + 8 * h;
      float* sq = A.colq.p + cl + 8 * h;
      float* sjx = reinterpret_cast<float*>(A.colj.p + cl + 8 * h);
      const __m256 old = _mm256_load_ps(sv);
      const __m256 up = _mm256_cmp_ps(v, old, _CMP_GT_OQ);
      _mm256_store_ps(sv, _mm256_blendv_ps(old, v, up));
      _mm256_store_ps(sjx, _mm256_blendv_ps(_mm256_load_ps(sjx), iv, up));
      _mm256_store_ps(sq, _mm256_add_ps(_mm256_load_ps(sq), q));
    }
    if (HIST) {
      // Lane l counts into its own sub-histogram (index bin * 8 + l): no two increments of one
      // vector hit the same address, which keeps store-to-load forwarding chains short.
      const __m256 one = _mm256_set1_ps(1.0f), hb = _mm256_set1_ps(P.hb);
      const __m256 bmax = _mm256_set1_ps(P.bmax), zero = _mm256_setzero_ps();
      const __m128i sh = _mm_cvtsi32_si128(P.hsh);
      const __m256i lane = P.hsh ? iota : _mm256_setzero_si256();
      const __m256i trash =
          _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(P.bins << P.hsh)), lane);
      alignas(32) int32_t idx[L];
      uint32_t* sub = A.sub.p;
#pragma GCC unroll 6
      for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          // floor == truncation after clamping to [0, bins - 1]; max_ps maps NaN to 0.
          __m256 t = _mm256_mul_ps(_mm256_add_ps(c[r][h], one), hb);
          t = _mm256_min_ps(_mm256_max_ps(t, zero), bmax);
          __m256i bi = _mm256_add_epi32(_mm256_sll_epi32(_mm256_cvttps_epi32(t), sh), lane);
          if (MASK) bi = _mm256_blendv_epi8(trash, bi, ok[r][h]);
          _mm256_store_si256(reinterpret_cast<__m256i*>(idx), bi);
#pragma GCC unroll 8
          for (int l = 0; l < L; ++l) ++sub[idx[l]];
        }
    }
    if (TOPK) {
      // Cheap rejection against the heap's current minimum: |c| > thr, or |c| == thr only when
      // this micro-tile can hold a pair (i, j) that precedes the minimum's (a tie it wins).
      // The second test keeps the cost low when very many pairs tie (duplicate rows).
      const float thr = A.top.threshold();
      const bool ties = A.top.may_win_tie(i0, j0);
      const __m256 th = _mm256_set1_ps(ties ? thr : std::nextafter(thr, INFINITY));  // >= : >
      __m256 any = _mm256_setzero_ps();
#pragma GCC unroll 6
      for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h)
          any = _mm256_or_ps(any, _mm256_cmp_ps(am[r][h], th, _CMP_GE_OQ));
      if (_mm256_movemask_ps(any)) {
        alignas(32) float cv[MR][NR], av[MR][NR];
        for (int r = 0; r < MR; ++r)
          for (int h = 0; h < 2; ++h) {
            _mm256_store_ps(&cv[r][8 * h], c[r][h]);
            _mm256_store_ps(&av[r][8 * h], am[r][h]);
          }
        for (int r = 0; r < MR; ++r)
          for (int q = 0; q < NR; ++q)
            if (av[r][q] >= 0.0f && av[r][q] >= A.top.threshold())
              A.top.offer({av[r][q], cv[r][q], i0 + r, j0 + q});
      }
    }
  }
};
#endif  // SK_CPU_AVX2

}  // namespace sk::cpu::detail
