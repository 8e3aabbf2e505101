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
