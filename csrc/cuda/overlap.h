// Host API of the CUDA overlap kernel (csrc/cuda/overlap.cu). Plain C++: included by the
// pybind11 binding, which is compiled without CUDA headers.
#pragma once
#include <cstdint>

namespace sk::cuda {

int device_count();

constexpr std::int64_t kTileRows = 128;   // rows per Gram tile (BM = BN)
constexpr std::int64_t kTileGroup = 16;   // tile rows per band of the schedule
constexpr std::int64_t kMaxRows = std::int64_t{1} << 30;
constexpr std::int64_t kSmemHistBins = 4096;  // more bins: counted with global atomics
constexpr int kRowSqFixedBits = 32;  // row_sq fixed-point scale 2^32 (epilogue.cuh kFix)
// Shared memory of one block before the histogram: the 4-stage operand pipeline and the fixed
// epilogue slots (mainloop.cuh kPipeBytes + epilogue.cuh kEpiFixedBytes; overlap.cu checks).
constexpr std::int64_t kSmemBaseBytes = 92160;

#ifdef __CUDACC__
#define SK_HOST_DEVICE __host__ __device__
#else
#define SK_HOST_DEVICE
#endif

// Round-to-nearest-even of fp32 bits onto tf32's 10 mantissa bits; inf and NaN unchanged.
// The rule of the reference (superkern/ops/overlap_ref.py round_to_precision), so both see
// identical operands; the binding exposes it to the tests.
SK_HOST_DEVICE inline std::uint32_t round_tf32_bits(std::uint32_t bits) {
  if ((bits & 0x7F800000u) == 0x7F800000u) return bits;
  bits += 0xFFFu + ((bits >> 13) & 1u);
  return bits & ~0x1FFFu;
}

// Where a launch counts its histogram: `words` shared-memory words (a power of two, at most
// kSmemHistBins, as many as the device lets one block have beyond kSmemBaseBytes) holding
// 1 << shift copies of the bins, or, when the bins do not fit there, global atomics.
struct HistLayout {
  std::int64_t words = 0;  // shared-memory words reserved (0: no shared histogram)
  int shift = 0;           // copies = 1 << shift (lane l counts into copy l % copies)
  bool global = false;     // counted with 64-bit atomics in global memory
  std::int64_t smem_bytes = kSmemBaseBytes;  // dynamic shared memory of one block
};

inline HistLayout hist_layout(std::int64_t bins, std::int64_t smem_optin) {
  HistLayout h;
  if (bins <= 0) return h;
  const std::int64_t room = (smem_optin - kSmemBaseBytes) / 4;
  std::int64_t words = kSmemHistBins;
  while (words > room && words > 0) words >>= 1;
  if (bins > words) {
    h.global = true;
    return h;
  }
  h.words = words;
  // several copies: fewer same-address collisions inside a warp for a narrow distribution
  while (h.shift < 5 && (bins << (h.shift + 1)) <= words) ++h.shift;
  h.smem_bytes += words * 4;
  return h;
}

// Arguments of one launch, already validated by the binding (csrc/bind_cuda.cpp). Pointers
// are device addresses of buffers the caller allocated; see the binding's docstring.
struct OverlapArgs {
  std::int64_t x = 0, scale = 0, n = 0, m = 0, ld = 0;
  std::int64_t split = 0;  // 0: pairs i < j; S: cross pairs i < S <= j (S % kTileRows == 0)
  int precision = 0;  // 0 fp32 (FFMA), 1 tf32, 2 bf16, 3 fp16 (tensor cores)
  bool stats = true;
  std::int64_t row_key = 0, row_sq = 0, block_sums = 0, max_blocks = 0;
  std::int64_t bins = 0, hist = 0;
  std::int64_t topk = 0, cand_cap = 0, cand_count = 0, cand_val = 0, cand_ij = 0;
  double thr_value = -1.0;
  std::int64_t thr_i = 0, thr_j = 0;
  std::int64_t stream = 0;
};

// Enqueue the kernel on args.stream; returns the number of blocks launched (rows of
// block_sums written). Throws std::invalid_argument (pointer not device memory of the current
// device) or std::runtime_error (any CUDA error, with its string).
std::int64_t overlap_partials(const OverlapArgs& args);

// Tile t -> (bi, bj) of the static schedule (host copy, for tests): triangular, or the
// split-mode rectangle when rect_a > 0 (tile rows of the first part).
void tile_coords_host(std::int64_t t, std::int64_t tiles_per_side, std::int64_t group,
                      std::int64_t rect_a, std::int64_t* bi, std::int64_t* bj);

}  // namespace sk::cuda
