// Mainloops of the overlap kernel: one 128 x 128 Gram tile acc = X[i0:i0+128] X[j0:j0+128]^T
// through a cp.async multi-stage shared-memory pipeline, 256 threads (8 warps).
//
// Shared memory per stage: A and B tiles of 128 rows x 64 bytes of k (32 16-bit or 16 fp32
// elements), row pitch padded to 80 bytes (5 x 16 B, odd) so that ldmatrix, the tf32 scalar
// fragment loads and the fp32 float4 loads are all bank-conflict free.
//
// Every mainloop leaves the tile as float acc[8][8] per thread: a Cartesian product of 8 rows
// and 8 columns of the tile, given by its Layout (row(ri), col(ci) increase with ri, ci, which
// the epilogue's tie rules rely on). A wgmma/TMA mainloop can replace these as long as it
// provides the same (acc, Layout) contract.
#pragma once
#include <cstdint>

#include "cuda/ptx.cuh"

namespace sk::cuda {

constexpr int kThreads = 256;
constexpr int kTile = 128;          // BM = BN
constexpr int kStages = 4;
constexpr int kKBytes = 64;         // k bytes per stage and row
constexpr int kPitch = 80;          // padded row pitch in shared memory (bytes)
constexpr int kTileBytes = kTile * kPitch;
constexpr int kStageBytes = 2 * kTileBytes;
constexpr int kPipeBytes = kStages * kStageBytes;

enum Mode : int { kFp32 = 0, kTf32 = 1, kBf16 = 2, kFp16 = 3 };

// Tensor-core fragment layout (m16n8k*, warps 2 (M) x 4 (N), warp tile 64 x 32):
// acc[2*mt + h][2*nt + e] is the mma accumulator c[2*h + e] of m-tile mt, n-tile nt.
struct MmaLayout {
  static constexpr unsigned kRowLanes = 0x03;  // lanes sharing a row differ in these bits
  static constexpr unsigned kColLanes = 0x1C;  // lanes sharing a column differ in these bits
  __device__ static int row(int ri, int warp, int lane) {
    return (warp >> 2) * 64 + (ri >> 1) * 16 + (lane >> 2) + (ri & 1) * 8;
  }
  __device__ static int col(int ci, int warp, int lane) {
    return (warp & 3) * 32 + (ci >> 1) * 8 + (lane & 3) * 2 + (ci & 1);
  }
  __device__ static bool row_leader(int lane) { return (lane & 3) == 0; }
  __device__ static bool col_leader(int lane) { return lane < 4; }
};

// fp32 FFMA layout: thread (ty, tx) = (tid / 16, tid % 16) owns rows ty + 16 ri, cols tx + 16 ci.
struct SimtLayout {
  static constexpr unsigned kRowLanes = 0x0F;
  static constexpr unsigned kColLanes = 0x10;
  __device__ static int row(int ri, int warp, int lane) {
    return ((warp * 32 + lane) >> 4) + 16 * ri;
  }
  __device__ static int col(int ci, int, int lane) { return (lane & 15) + 16 * ci; }
  __device__ static bool row_leader(int lane) { return (lane & 15) == 0; }
  __device__ static bool col_leader(int lane) { return lane < 16; }
};

// Issue the cp.async copies of k-block kb (bytes [kb*64, kb*64+64) of each row) for the A rows
// i0.. and B rows j0.. into stage buffer `stage`. Each thread copies chunks tid and tid + 256 of
// each operand (512 16-byte chunks = 128 rows x 4). Rows >= n and bytes >= k_bytes (the row's
// used length, a multiple of 16, so a chunk is entirely in or out) are zero-filled.
__device__ __forceinline__ void load_stage(uint32_t stage, const char* x, int64_t n,
                                           int64_t ld_bytes, int64_t k_bytes, int64_t i0,
                                           int64_t j0, int64_t kb, int tid) {
#pragma unroll
  for (int q = 0; q < 2; ++q) {
    const int c = tid + q * kThreads;
    const int r = c >> 2;
    const int64_t kbyte = kb * kKBytes + (c & 3) * 16;
    const uint32_t dst = stage + r * kPitch + (c & 3) * 16;
    const bool kin = kbyte < k_bytes;
    const int64_t ra = i0 + r, rb = j0 + r;
    const bool oka = kin && ra < n, okb = kin && rb < n;
    ptx::cp_async16(dst, oka ? x + ra * ld_bytes + kbyte : x, oka ? 16 : 0);
    ptx::cp_async16(dst + kTileBytes, okb ? x + rb * ld_bytes + kbyte : x, okb ? 16 : 0);
  }
}

// tf32: round the chunks this thread copied (after its own cp.async.wait, before the barrier
// that publishes the stage), so each element is rounded once, not once per fragment load.
__device__ __forceinline__ void round_stage_tf32(uint32_t stage, int tid) {
#pragma unroll
  for (int q = 0; q < 2; ++q) {
    const int c = tid + q * kThreads;
    const uint32_t a = stage + (c >> 2) * kPitch + (c & 3) * 16;
#pragma unroll
    for (int op = 0; op < 2; ++op) {
      const uint32_t addr = a + op * kTileBytes;
      uint4 v = ptx::lds128(addr);
      v.x = ptx::round_tf32(v.x);
      v.y = ptx::round_tf32(v.y);
      v.z = ptx::round_tf32(v.z);
      v.w = ptx::round_tf32(v.w);
      ptx::sts128(addr, v);
    }
  }
}

// One stage of bf16 / fp16 tensor-core products: 2 k16 steps, 4 x 4 mma per warp per step.
template <bool BF16>
__device__ __forceinline__ void compute_stage_16(uint32_t stage, float (&acc)[8][8], int warp,
                                                 int lane) {
  const uint32_t a_base = stage + ((warp >> 2) * 64 + (lane & 15)) * kPitch + (lane >> 4) * 16;
  const uint32_t b_base = stage + kTileBytes +
                          ((warp & 3) * 32 + (lane & 7) + ((lane >> 4) << 3)) * kPitch +
                          ((lane >> 3) & 1) * 16;
#pragma unroll
  for (int ks = 0; ks < 2; ++ks) {
    uint32_t a[4][4], b[4][2];
#pragma unroll
    for (int mt = 0; mt < 4; ++mt) ptx::ldmatrix_x4(a[mt], a_base + mt * 16 * kPitch + ks * 32);
#pragma unroll
    for (int np = 0; np < 2; ++np) {
      uint32_t r[4];
      ptx::ldmatrix_x4(r, b_base + np * 16 * kPitch + ks * 32);
      b[2 * np][0] = r[0];
      b[2 * np][1] = r[1];
      b[2 * np + 1][0] = r[2];
      b[2 * np + 1][1] = r[3];
    }
#pragma unroll
    for (int mt = 0; mt < 4; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
        ptx::mma_16816<BF16>(acc[2 * mt][2 * nt], acc[2 * mt][2 * nt + 1], acc[2 * mt + 1][2 * nt],
                             acc[2 * mt + 1][2 * nt + 1], a[mt], b[nt][0], b[nt][1]);
  }
}

// One stage of tf32 tensor-core products: 2 k8 steps; fragments by 32-bit shared loads.
__device__ __forceinline__ void compute_stage_tf32(const unsigned char* stage, float (&acc)[8][8],
                                                   int warp, int lane) {
  const int g = lane >> 2, t = lane & 3;
  const unsigned char* a_base = stage + ((warp >> 2) * 64 + g) * kPitch + t * 4;
  const unsigned char* b_base = stage + kTileBytes + ((warp & 3) * 32 + g) * kPitch + t * 4;
#pragma unroll
  for (int ks = 0; ks < 2; ++ks) {
    uint32_t a[4][4], b[4][2];
#pragma unroll
    for (int mt = 0; mt < 4; ++mt) {
      const uint32_t* p = reinterpret_cast<const uint32_t*>(a_base + mt * 16 * kPitch + ks * 32);
      constexpr int kRow8 = 8 * kPitch / 4;  // 8 rows down, in 32-bit words
      a[mt][0] = p[0];
      a[mt][1] = p[kRow8];
      a[mt][2] = p[4];
      a[mt][3] = p[kRow8 + 4];
    }
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      const uint32_t* p = reinterpret_cast<const uint32_t*>(b_base + nt * 8 * kPitch + ks * 32);
      b[nt][0] = p[0];
      b[nt][1] = p[4];
    }
#pragma unroll
    for (int mt = 0; mt < 4; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
        ptx::mma_1688_tf32(acc[2 * mt][2 * nt], acc[2 * mt][2 * nt + 1], acc[2 * mt + 1][2 * nt],
                           acc[2 * mt + 1][2 * nt + 1], a[mt], b[nt][0], b[nt][1]);
  }
}

// One stage of exact fp32 FFMA products (16 k values), k ascending, one fmaf chain per output.
// Rows are taken 4 at a time so that only 16 operand registers are live next to the 64
// accumulators (8 rows at once spills under the 128-register cap); B is re-read per half.
__device__ __forceinline__ void compute_stage_fp32(const unsigned char* stage, float (&acc)[8][8],
                                                   int tid) {
  const unsigned char* a_base = stage + (tid >> 4) * kPitch;
  const unsigned char* b_base = stage + kTileBytes + (tid & 15) * kPitch;
#pragma unroll
  for (int kq = 0; kq < 4; ++kq) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float4 a[4];
#pragma unroll
      for (int r = 0; r < 4; ++r)
        a[r] = *reinterpret_cast<const float4*>(a_base + (half * 4 + r) * 16 * kPitch + kq * 16);
#pragma unroll
      for (int ci = 0; ci < 8; ++ci) {
        const float4 b = *reinterpret_cast<const float4*>(b_base + ci * 16 * kPitch + kq * 16);
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          float& v = acc[half * 4 + r][ci];
          v = fmaf(a[r].x, b.x, v);
          v = fmaf(a[r].y, b.y, v);
          v = fmaf(a[r].z, b.z, v);
          v = fmaf(a[r].w, b.w, v);
        }
      }
    }
  }
}

// The whole k loop for tile (i0, j0): kStages-deep cp.async pipeline, one barrier per k-block.
template <int MODE>
__device__ __forceinline__ void mainloop(unsigned char* smem, const char* x, int64_t n,
                                         int64_t ld_bytes, int64_t k_bytes, int64_t i0,
                                         int64_t j0, float (&acc)[8][8], int tid, int warp,
                                         int lane) {
  const int64_t kt = (k_bytes + kKBytes - 1) / kKBytes;
  const uint32_t base = ptx::smem_addr(smem);
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < kt) load_stage(base + s * kStageBytes, x, n, ld_bytes, k_bytes, i0, j0, s, tid);
    ptx::cp_async_commit();  // empty groups keep the group count uniform
  }
  for (int64_t kb = 0; kb < kt; ++kb) {
    const int s = static_cast<int>(kb % kStages);
    ptx::cp_async_wait<kStages - 2>();  // this thread's copies of k-block kb have landed
    if constexpr (MODE == kTf32) round_stage_tf32(base + s * kStageBytes, tid);
    // Publishes stage s to every warp, and guarantees everyone finished computing k-block
    // kb - 1, whose buffer the load below overwrites.
    __syncthreads();
    const int64_t nk = kb + kStages - 1;
    if (nk < kt)
      load_stage(base + static_cast<int>(nk % kStages) * kStageBytes, x, n, ld_bytes, k_bytes, i0,
                 j0, nk, tid);
    ptx::cp_async_commit();
    if constexpr (MODE == kFp32) {
      compute_stage_fp32(smem + s * kStageBytes, acc, tid);
    } else if constexpr (MODE == kTf32) {
      compute_stage_tf32(smem + s * kStageBytes, acc, warp, lane);
    } else {
      compute_stage_16<MODE == kBf16>(base + s * kStageBytes, acc, warp, lane);
    }
  }
  ptx::cp_async_wait<0>();
  __syncthreads();  // all warps done with the pipeline buffers before the next tile's prologue
}

}  // namespace sk::cuda
