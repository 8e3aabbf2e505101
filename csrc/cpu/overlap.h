// C++ CPU overlap engine: reductions over all pairs i < j of c_ij = s_i s_j (x_i . x_j) without
// materialising the N x N matrix (OpenMP over a triangular tile list, fused epilogue).
#pragma once
#include <cstdint>

namespace sk::cpu {

int num_threads();

// Which micro-kernel runs. kAuto = the SIMD one when it was compiled in, else kGeneric.
enum class Kernel { kAuto, kAvx2, kGeneric };
bool has_avx2();  // true when the AVX2+FMA micro-kernel was compiled (-march with AVX2 and FMA)

// Tile edge (rows and columns of one schedulable tile) used for m columns when tile == 0.
int64_t default_tile(int64_t m);

// Caller-allocated outputs (the OverlapPartials contract, indices local to the N rows).
struct OverlapOut {
  double* sums;         // [3]: sum c, sum |c|, sum c^2 over pairs i < j
  int64_t* hist;        // [bins] (unused when bins == 0)
  float* row_max;       // [N]: max over j != i of |c_ij|; NaN when N == 1
  int64_t* row_arg;     // [N]: the j attaining it, ties to the smallest j; -1 when N == 1
  double* row_sq;       // [N]: sum over j != i of c_ij^2
  float* topk_vals;     // [k]: signed c, ordered by (|c| desc, i asc, j asc)
  int64_t* topk_pairs;  // [k, 2]: (i, j), i < j
};

// How X is stored: fp32, or 16-bit bf16 / IEEE half bits that the packing widens to fp32
// (exactly), so that a 16-bit head needs no fp32 copy of its own.
enum class Format { kF32, kBF16, kF16 };

// X: (N, m) row-major in format fmt; scale: (N,) fp32. Requires 0 <= topk <= N(N-1)/2,
// bins >= 0, tile == 0 or a positive multiple of 48, threads >= 0 (0 = OpenMP default).
// Results are bitwise identical for every thread count (see overlap.cpp), and for the same
// finite values in every format. Throws std::bad_alloc.
void overlap_partials(const void* X, Format fmt, const float* scale, int64_t N, int64_t m,
                      int64_t bins, int64_t topk, int threads, Kernel kernel, int64_t tile,
                      const OverlapOut& out);

// fp32 value of IEEE half bits (exact; subnormals, inf and NaN included).
float half_to_float(uint16_t h);

}  // namespace sk::cpu
