// CUDA overlap kernel: persistent grid over the static triangular tile list of C = X X^T,
// tensor-core (or exact FFMA) Gram tiles, fused reduction epilogue. See docs/sections/cuda.md.
#include <cuda_runtime.h>

#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "checks.h"
#include "cuda/epilogue.cuh"
#include "cuda/mainloop.cuh"
#include "cuda/overlap.h"
#include "cuda/schedule.h"

namespace sk::cuda {

// Two blocks per SM (128-register cap) for the tensor-core modes, so one block's epilogue
// overlaps the other's mainloop. The fp32 FFMA mode needs 64 accumulators plus 20 operand
// registers per thread and spills inside its k loop under that cap: it runs one block per SM.
template <int MODE>
constexpr int kMinBlocks = MODE == kFp32 ? 1 : 2;

template <int MODE, bool STATS, bool HIST, bool TOPK>
__global__ void __launch_bounds__(kThreads, kMinBlocks<MODE>) overlap_kernel(const Params p) {
  using L = std::conditional_t<MODE == kFp32, SimtLayout, MmaLayout>;
  extern __shared__ __align__(128) unsigned char smem[];
  const EpiSmem s = carve_epi(smem + kPipeBytes);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

  if constexpr (STATS) {
    for (int k = tid; k < 4 * kTile; k += kThreads) s.row_key[k] = 0;  // 4 contiguous arrays
    s.sums[tid * 3 + 0] = 0.0;
    s.sums[tid * 3 + 1] = 0.0;
    s.sums[tid * 3 + 2] = 0.0;
  }
  if constexpr (HIST) {
    for (int k = tid; k < p.hist_words; k += kThreads) s.hist[k] = 0;
  }
  __syncthreads();

  unsigned since_flush = 0;  // 32-bit: registers are at the cap across the mainloop
  for (int64_t t = blockIdx.x; t < p.tiles; t += gridDim.x) {
    int64_t bi, bj;
    if (p.rect_a > 0)
      rect_tile_coords(t, p.rect_a, p.tiles_per_side, p.group, &bi, &bj);
    else
      tile_coords(t, p.tiles_per_side, p.group, &bi, &bj);
    const int64_t i0 = bi * kTile, j0 = bj * kTile;
    float acc[8][8];
#pragma unroll
    for (int ri = 0; ri < 8; ++ri)
#pragma unroll
      for (int ci = 0; ci < 8; ++ci) acc[ri][ci] = 0.0f;
    mainloop<MODE>(smem, p.x, p.n, p.ld_bytes, p.k_bytes, i0, j0, acc, tid, warp, lane);

    // fp32 within the tile, fp64 across tiles.
    float sc = 0.0f, sa = 0.0f, ss = 0.0f;
    // One masked epilogue for every tile: an unmasked copy for interior tiles saves two
    // integer compares per pair but doubles the epilogue code and its compile time.
    epilogue<L, STATS, HIST, TOPK>(p, s, acc, i0, j0, warp, lane, sc, sa, ss);
    if constexpr (STATS) {
      s.sums[tid * 3 + 0] += static_cast<double>(sc);
      s.sums[tid * 3 + 1] += static_cast<double>(sa);
      s.sums[tid * 3 + 2] += static_cast<double>(ss);
      __syncthreads();
      flush_tile_rows(p, s, i0, j0, tid);
    }
    if constexpr (HIST) {
      if (++since_flush == kHistFlushTiles) {  // block-uniform: keeps 32-bit words exact
        __syncthreads();
        if (!p.hist_global) flush_hist(p, s, tid);
        since_flush = 0;
      }
    }
    // The shared slots cleared above are touched again only after the next tile's mainloop
    // barriers.
  }
  if constexpr (HIST) {
    __syncthreads();
    if (!p.hist_global) flush_hist(p, s, tid);
  }
  if constexpr (STATS) {
    // Fixed-order block reduction: shuffle tree inside each warp, then warps 0..7 in order.
    double v[3];
#pragma unroll
    for (int q = 0; q < 3; ++q) {
      v[q] = s.sums[tid * 3 + q];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) v[q] += __shfl_xor_sync(0xFFFFFFFFu, v[q], off);
    }
    __syncthreads();  // every thread has read its own slot before lane 0s overwrite them
    if (lane == 0) {
#pragma unroll
      for (int q = 0; q < 3; ++q) s.sums[warp * 3 + q] = v[q];
    }
    __syncthreads();
    if (tid < 3) {
      double total = 0.0;
      for (int w = 0; w < kThreads / 32; ++w) total += s.sums[w * 3 + tid];
      p.block_sums[blockIdx.x * 3 + tid] = total;
    }
  }
}

namespace {

[[noreturn]] void cuda_fail(cudaError_t err, const char* what) {
  cudaGetLastError();  // clear a non-sticky error so later calls start clean
  std::ostringstream os;
  os << "CUDA error in " << what << ": " << cudaGetErrorString(err) << " (" << cudaGetErrorName(err)
     << ", code " << static_cast<int>(err) << ")";
  throw std::runtime_error(os.str());
}

#define SK_CUDA(call)                                 \
  do {                                                \
    const cudaError_t sk_err_ = (call);               \
    if (sk_err_ != cudaSuccess) cuda_fail(sk_err_, #call); \
  } while (0)

// A pointer the kernel will dereference must be device (or managed) memory of this device.
void check_device_pointer(std::int64_t ptr, const char* name, int device) {
  if (ptr == 0) return;  // optional outputs; the binding checked the required ones
  cudaPointerAttributes attr{};
  const cudaError_t err = cudaPointerGetAttributes(&attr, reinterpret_cast<const void*>(ptr));
  if (err != cudaSuccess) cuda_fail(err, "cudaPointerGetAttributes");
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
    fail(name, "=0x", std::hex, ptr, std::dec, " is not CUDA device memory (memory type ",
         static_cast<int>(attr.type), "); pass tensor.data_ptr() of a CUDA tensor");
  if (attr.device != device)
    fail(name, " lives on CUDA device ", attr.device, " but the current device is ", device,
         "; call inside torch.cuda.device(tensor.device)");
}

bool sync_debug() {
  static const bool on = [] {
    const char* v = std::getenv("SUPERKERN_CUDA_SYNC");
    return v != nullptr && v[0] != '\0' && v[0] != '0';
  }();
  return on;
}

template <int MODE, bool STATS, bool HIST, bool TOPK>
std::int64_t launch(const Params& p, cudaStream_t stream, std::int64_t max_blocks, int device) {
  auto* fn = overlap_kernel<MODE, STATS, HIST, TOPK>;
  const int smem = static_cast<int>(kSmemBaseBytes) + (HIST ? p.hist_words * 4 : 0);
  // The attribute is the kernel's, shared by every thread that launches it: set it to the
  // most any launch of this kernel on this device asks for (a value that depended on this
  // launch's bins could be lowered by another thread between its set and our launch).
  int optin = 0;
  SK_CUDA(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  const int most = static_cast<int>(HIST ? hist_layout(1, optin).smem_bytes : kSmemBaseBytes);
  SK_CUDA(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, most));
  SK_CUDA(cudaFuncSetAttribute(fn, cudaFuncAttributePreferredSharedMemoryCarveout,
                               cudaSharedmemCarveoutMaxShared));
  int sms = 0, per_sm = 0;
  SK_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  SK_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fn, kThreads, smem));
  if (per_sm < 1) {
    std::ostringstream os;
    os << "overlap kernel does not fit on device " << device << " (" << smem
       << " bytes of shared memory per block)";
    throw std::runtime_error(os.str());
  }
  std::int64_t grid = static_cast<std::int64_t>(per_sm) * sms;
  if (grid > p.tiles) grid = p.tiles;
  if (grid > max_blocks) grid = max_blocks;
  fn<<<static_cast<unsigned>(grid), kThreads, smem, stream>>>(p);
  SK_CUDA(cudaGetLastError());
  if (sync_debug()) SK_CUDA(cudaStreamSynchronize(stream));
  return grid;
}

template <int MODE>
std::int64_t dispatch_flags(const Params& p, const OverlapArgs& a, cudaStream_t st, int dev) {
  const bool hist = a.bins > 0, topk = a.cand_cap > 0;
  if (!a.stats) return launch<MODE, false, false, true>(p, st, a.max_blocks, dev);
  if (hist && topk) return launch<MODE, true, true, true>(p, st, a.max_blocks, dev);
  if (hist) return launch<MODE, true, true, false>(p, st, a.max_blocks, dev);
  if (topk) return launch<MODE, true, false, true>(p, st, a.max_blocks, dev);
  return launch<MODE, true, false, false>(p, st, a.max_blocks, dev);
}

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

void tile_coords_host(std::int64_t t, std::int64_t tiles_per_side, std::int64_t group,
                      std::int64_t rect_a, std::int64_t* bi, std::int64_t* bj) {
  if (rect_a > 0)
    rect_tile_coords(t, rect_a, tiles_per_side, group, bi, bj);
  else
    tile_coords(t, tiles_per_side, group, bi, bj);
}

static_assert(kFixBits == kRowSqFixedBits, "row_sq fixed-point scale out of sync");
static_assert(kTile == kTileRows && kHistWords == kSmemHistBins, "constants out of sync");
static_assert(kPipeBytes + kEpiFixedBytes == kSmemBaseBytes, "shared memory layout out of sync");

std::int64_t overlap_partials(const OverlapArgs& a) {
  if (a.n < 2) return 0;  // no pairs: nothing to launch (the caller's buffers stay as given)
  int device = -1;
  SK_CUDA(cudaGetDevice(&device));
  check_device_pointer(a.x, "x_ptr", device);
  check_device_pointer(a.scale, "scale_ptr", device);
  check_device_pointer(a.row_key, "row_key_ptr", device);
  check_device_pointer(a.row_sq, "row_sq_ptr", device);
  check_device_pointer(a.block_sums, "block_sums_ptr", device);
  check_device_pointer(a.hist, "hist_ptr", device);
  check_device_pointer(a.cand_count, "cand_count_ptr", device);
  check_device_pointer(a.cand_val, "cand_val_ptr", device);
  check_device_pointer(a.cand_ij, "cand_ij_ptr", device);

  const int elem = a.precision <= kTf32 ? 4 : 2;
  Params p{};
  p.x = reinterpret_cast<const char*>(a.x);
  p.scale = reinterpret_cast<const float*>(a.scale);
  p.n = a.n;
  p.ld_bytes = a.ld * elem;
  p.k_bytes = (a.m * elem + 15) / 16 * 16;
  p.tiles_per_side = (a.n + kTile - 1) / kTile;
  // Split mode: only the cross tiles of rows [0, split) x [split, n) (split % kTile == 0,
  // checked by the binding), so every tile lies strictly above the diagonal.
  p.rect_a = a.split / kTile;
  p.tiles = a.split > 0 ? p.rect_a * (p.tiles_per_side - p.rect_a) : num_tiles(p.tiles_per_side);
  p.group = kTileGroup;
  p.row_key = reinterpret_cast<unsigned long long*>(a.row_key);
  p.row_sq = reinterpret_cast<unsigned long long*>(a.row_sq);
  p.block_sums = reinterpret_cast<double*>(a.block_sums);
  p.hist = reinterpret_cast<unsigned long long*>(a.hist);
  p.bins = static_cast<int>(a.bins);
  // The per-block shared-memory limit differs by GPU (227 KiB on sm_90, 163 KiB on sm_80,
  // 99 KiB on sm_86/sm_89): the histogram takes what is left, or goes to global atomics.
  int optin = 0;
  SK_CUDA(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (optin < kSmemBaseBytes) {
    std::ostringstream os;
    os << "the cuda overlap kernel needs " << kSmemBaseBytes << " bytes of shared memory per "
       << "block; device " << device << " allows " << optin << " (use backend='triton')";
    throw std::runtime_error(os.str());
  }
  const HistLayout hl = hist_layout(a.bins, optin);
  p.hist_global = hl.global ? 1 : 0;
  p.hist_words = static_cast<int>(hl.words);
  p.hist_shift = hl.shift;
  p.hist_half = static_cast<float>(a.bins) * 0.5f;
  p.cand_count = reinterpret_cast<unsigned long long*>(a.cand_count);
  p.cand_val = reinterpret_cast<float*>(a.cand_val);
  p.cand_ij = reinterpret_cast<long long*>(a.cand_ij);
  p.cand_cap = a.cand_cap;
  p.thr_v = static_cast<float>(a.thr_value);
  p.thr_i = static_cast<int>(a.thr_i);
  p.thr_j = static_cast<int>(a.thr_j);

  const auto st = reinterpret_cast<cudaStream_t>(a.stream);
  switch (a.precision) {
    case kFp32: return dispatch_flags<kFp32>(p, a, st, device);
    case kTf32: return dispatch_flags<kTf32>(p, a, st, device);
    case kBf16: return dispatch_flags<kBf16>(p, a, st, device);
    default: return dispatch_flags<kFp16>(p, a, st, device);
  }
}

}  // namespace sk::cuda
