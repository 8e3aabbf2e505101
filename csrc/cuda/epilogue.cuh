// Fused reduction epilogue of the overlap kernel: everything is reduced from the accumulator
// registers of one 128 x 128 tile; the N x N matrix never exists.
//
// Determinism: every floating-point sum is done in a fixed order (per thread, then fixed
// shuffle trees, then fixed-point integers); everything else is an integer atomic
// (histogram counts, fixed-point row sums, packed max keys), and integer adds / maxes commute.
#pragma once
#include <cstdint>

#include "cuda/mainloop.cuh"

namespace sk::cuda {

constexpr int kHistWords = 4096;          // shared-memory histogram words (all copies)
constexpr unsigned kHistFlushTiles = 1u << 17;  // 2^17 tiles x 2^14 pairs < 2^32 per word
// Fixed-point scale of per-row sums of c^2: a tile partial (<= 128) times 2^32 fits easily,
// a whole row (<= n - 1 < 2^30) times 2^32 stays below 2^62, and the rounding quantum 2^-32 per
// tile partial is far below fp32's own error on that partial.
constexpr int kFixBits = 32;
constexpr float kFix = 4294967296.0f;  // 2^kFixBits

struct Params {
  const char* x;          // (n, ld) row-major operand, 16-byte aligned rows
  const float* scale;     // (n,) per-row factors
  int64_t n, ld_bytes;    // rows, row stride in bytes
  int64_t k_bytes;        // bytes of a row that take part: m * elem rounded up to 16 (pad = 0)
  int64_t tiles_per_side, tiles;
  int64_t group;          // tile rows per band of the schedule
  int64_t rect_a;         // split mode: tile rows of the first part (0 = triangular schedule)
  // STATS
  unsigned long long* row_key;  // (n,) packed (|c| bits << 32 | ~j), atomicMax
  unsigned long long* row_sq;   // (n,) fixed-point sum of c^2 (scale 2^32), atomicAdd
  double* block_sums;           // (gridDim.x, 3) sum c, sum |c|, sum c^2 per block
  // HIST
  unsigned long long* hist;     // (bins,) int64 counts
  int bins, hist_shift;         // copies = 1 << hist_shift in shared memory
  int hist_global;              // 1: bins too many for shared memory, count in global memory
  int hist_words;               // shared-memory words of the histogram (hist_layout)
  float hist_half;              // bins * 0.5f
  // TOPK: append every pair whose key (|c| desc, i asc, j asc) ranks at or above the threshold
  unsigned long long* cand_count;
  float* cand_val;
  long long* cand_ij;           // i << 32 | j
  int64_t cand_cap;
  float thr_v;
  int thr_i, thr_j;
};

struct EpiSmem {
  unsigned long long* row_key;  // [128] each
  unsigned long long* col_key;
  unsigned long long* row_sq;
  unsigned long long* col_sq;
  double* sums;                 // [kThreads][3] per-thread fp64 sums (own slot, no atomics)
  unsigned* hist;               // [hist_words] (at most kHistWords)
};
// Per-thread fp64 sums live in shared memory, not registers: they would cost 6 registers
// across the mainloop, which already sits at the 128-register cap.
constexpr int kEpiFixedBytes = 4 * kTile * 8 + kThreads * 3 * 8;

__device__ __forceinline__ EpiSmem carve_epi(unsigned char* p) {
  EpiSmem s;
  s.row_key = reinterpret_cast<unsigned long long*>(p);
  s.col_key = s.row_key + kTile;
  s.row_sq = s.col_key + kTile;
  s.col_sq = s.row_sq + kTile;
  s.sums = reinterpret_cast<double*>(s.col_sq + kTile);
  s.hist = reinterpret_cast<unsigned*>(p + kEpiFixedBytes);
  return s;
}

// Key order = (|c|, smaller partner index): the packed u64 compares the same way, so one
// integer atomicMax keeps the max and breaks ties to the smallest j whatever the order.
__device__ __forceinline__ unsigned long long pack_key(float v, int j) {
  return (static_cast<unsigned long long>(__float_as_uint(v)) << 32) |
         static_cast<unsigned long long>(0xFFFFFFFFu - static_cast<unsigned>(j));
}
__device__ __forceinline__ unsigned long long to_fixed(float v) {
  return static_cast<unsigned long long>(__float2ll_rn(v * kFix));
}

// (v, j) <- the better of (v, j) and the partner lane's, over the lanes named by LANES.
template <unsigned LANES>
__device__ __forceinline__ void reduce_max_sum(float& v, int& j, float& s) {
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    if (LANES & off) {
      const float ov = __shfl_xor_sync(0xFFFFFFFFu, v, off);
      const int oj = __shfl_xor_sync(0xFFFFFFFFu, j, off);
      const float os = __shfl_xor_sync(0xFFFFFFFFu, s, off);
      if (ov > v || (ov == v && oj < j)) {
        v = ov;
        j = oj;
      }
      s += os;  // a + b == b + a: every lane of the tree gets the same bits
    }
  }
}

// Row pass (ri outer): sums, histogram, top-k candidates and per-row max / sum of squares.
// Column pass (ci outer): per-column max / sum of squares, recomputing c from the accumulators
// (two multiplies) instead of carrying 24 column registers through the row pass, which would
// spill under the 128-register cap of two blocks per SM.
template <class L, bool STATS, bool HIST, bool TOPK>
__device__ __forceinline__ void epilogue(const Params& p, const EpiSmem& s, float (&acc)[8][8],
                                         int64_t i0, int64_t j0, int warp, int lane, float& sc,
                                         float& sa, float& ss) {
  const int n = static_cast<int>(p.n);  // n <= 2^30 (checked by the binding)
  const int gi0 = static_cast<int>(i0), gj0 = static_cast<int>(j0);
  float sj[8];
#pragma unroll
  for (int ci = 0; ci < 8; ++ci) {
    const int gj = gj0 + L::col(ci, warp, lane);
    sj[ci] = gj < n ? __ldg(p.scale + gj) : 0.0f;
  }
#pragma unroll
  for (int ri = 0; ri < 8; ++ri) {
    const int lr = L::row(ri, warp, lane);
    const int gi = gi0 + lr;
    const float si = gi < n ? __ldg(p.scale + gi) : 0.0f;
    float rv = -1.0f, rs = 0.0f;
    int rj = 0;
#pragma unroll
    for (int ci = 0; ci < 8; ++ci) {
      const int gj = gj0 + L::col(ci, warp, lane);
      // Same association as the reference: (x_i . x_j * s_i) * s_j.
      const float c = __fmul_rn(__fmul_rn(acc[ri][ci], si), sj[ci]);
      const bool valid = gi < gj && gj < n;  // upper triangle, inside the matrix
      const float a = fabsf(c);
      if constexpr (STATS) {
        if (valid) {
          const float c2 = __fmul_rn(c, c);
          sc += c;
          sa += a;
          ss += c2;
          rs += c2;
          if (a > rv) {  // ci ascending = j ascending: strict > keeps the smallest j
            rv = a;
            rj = gj;
          }
        }
      }
      if constexpr (HIST) {
        if (valid) {
          // The reference's bin rule in fp32, with no fused multiply-add.
          int b = static_cast<int>(floorf(__fmul_rn(__fadd_rn(c, 1.0f), p.hist_half)));
          b = min(max(b, 0), p.bins - 1);
          if (p.hist_global)
            atomicAdd(p.hist + b, 1ull);
          else
            atomicAdd(s.hist + (b << p.hist_shift) + (lane & ((1 << p.hist_shift) - 1)), 1u);
        }
      }
      if constexpr (TOPK) {
        const bool cand = valid && a >= p.thr_v &&
                          (a > p.thr_v || gi < p.thr_i || (gi == p.thr_i && gj <= p.thr_j));
        const unsigned bal = __ballot_sync(0xFFFFFFFFu, cand);
        if (bal) {  // warp-uniform; rare when the threshold is good
          const int leader = __ffs(bal) - 1;
          unsigned long long base = 0;
          if (lane == leader)
            base = atomicAdd(p.cand_count, static_cast<unsigned long long>(__popc(bal)));
          base = __shfl_sync(0xFFFFFFFFu, base, leader);
          if (cand) {
            const unsigned long long slot = base + __popc(bal & ((1u << lane) - 1u));
            if (slot < static_cast<unsigned long long>(p.cand_cap)) {
              p.cand_val[slot] = c;
              p.cand_ij[slot] = (static_cast<long long>(gi) << 32) | static_cast<long long>(gj);
            }
          }
        }
      }
    }
    if constexpr (STATS) {
      reduce_max_sum<L::kRowLanes>(rv, rj, rs);
      if (L::row_leader(lane)) {
        if (rv >= 0.0f) atomicMax(s.row_key + lr, pack_key(rv, rj));
        if (rs != 0.0f) atomicAdd(s.row_sq + lr, to_fixed(rs));
      }
    }
  }
  if constexpr (STATS) {
    float si[8];
#pragma unroll
    for (int ri = 0; ri < 8; ++ri) {
      const int gi = gi0 + L::row(ri, warp, lane);
      si[ri] = gi < n ? __ldg(p.scale + gi) : 0.0f;
    }
#pragma unroll
    for (int ci = 0; ci < 8; ++ci) {
      const int lc = L::col(ci, warp, lane);
      const int gj = gj0 + lc;
      float cv = -1.0f, cs = 0.0f;
      int cr = 0;
#pragma unroll
      for (int ri = 0; ri < 8; ++ri) {
        const int gi = gi0 + L::row(ri, warp, lane);
        const float c = __fmul_rn(__fmul_rn(acc[ri][ci], si[ri]), sj[ci]);
        const bool valid = gi < gj && gj < n;  // upper triangle, inside the matrix
        if (valid) {
          const float a = fabsf(c);
          cs += __fmul_rn(c, c);
          if (a > cv) {  // ri ascending = i ascending
            cv = a;
            cr = gi;
          }
        }
      }
      reduce_max_sum<L::kColLanes>(cv, cr, cs);
      if (L::col_leader(lane)) {
        if (cv >= 0.0f) atomicMax(s.col_key + lc, pack_key(cv, cr));
        if (cs != 0.0f) atomicAdd(s.col_sq + lc, to_fixed(cs));
      }
    }
  }
}

// After a barrier: move the tile's per-row / per-column results to global memory (one
// integer atomic per row and per column) and clear the shared slots for the next tile.
__device__ __forceinline__ void flush_tile_rows(const Params& p, const EpiSmem& s, int64_t i0,
                                                int64_t j0, int tid) {
  const bool is_row = tid < kTile;
  const int k = is_row ? tid : tid - kTile;
  const int64_t g = (is_row ? i0 : j0) + k;
  unsigned long long* key = is_row ? s.row_key : s.col_key;
  unsigned long long* sq = is_row ? s.row_sq : s.col_sq;
  const unsigned long long kv = key[k], qv = sq[k];
  key[k] = 0;
  sq[k] = 0;
  if (g < p.n) {
    if (kv) atomicMax(p.row_key + g, kv);
    if (qv) atomicAdd(p.row_sq + g, qv);
  }
}

// After a barrier: add the block's shared histogram copies into the global int64 counts.
__device__ __forceinline__ void flush_hist(const Params& p, const EpiSmem& s, int tid) {
  const int copies = 1 << p.hist_shift;
  for (int b = tid; b < p.bins; b += kThreads) {
    unsigned long long total = 0;
    for (int r = 0; r < copies; ++r) {
      total += s.hist[(b << p.hist_shift) + r];
      s.hist[(b << p.hist_shift) + r] = 0;
    }
    if (total) atomicAdd(p.hist + b, total);
  }
}

}  // namespace sk::cuda
