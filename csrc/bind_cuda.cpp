// Bindings of the CUDA kernels (csrc/cuda/). Compiled by the host C++ compiler; when the
// extension was built without CUDA, the entry points are absent and `built_with_cuda` is False.
// No libtorch: the Python launcher (superkern/ops/overlap_cuda.py) allocates every buffer with
// torch and passes raw device addresses. This layer checks what it can without a GPU
// (ValueError with the numbers), then forwards.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "checks.h"
#ifdef SK_HAVE_CUDA
#include "cuda/overlap.h"
#endif

namespace py = pybind11;

#ifdef SK_HAVE_CUDA
namespace {

using std::int64_t;

void check_ptr(int64_t ptr, const char* name, int64_t align) {
  SK_CHECK(ptr != 0, name, " is a null pointer");
  SK_CHECK(ptr > 0, name, "=", ptr, " is not a valid address");
  SK_CHECK(ptr % align == 0, name, "=0x", std::hex, ptr, std::dec, " is not ", align,
           "-byte aligned (address mod ", align, " = ", ptr % align, ")");
}

int precision_code(const std::string& precision, int64_t* elem) {
  if (precision == "fp32" || precision == "tf32") *elem = 4;
  if (precision == "bf16" || precision == "fp16") *elem = 2;
  if (precision == "fp32") return 0;
  if (precision == "tf32") return 1;
  if (precision == "bf16") return 2;
  if (precision == "fp16") return 3;
  sk::fail("unknown precision '", precision, "'; choose from fp32, tf32, bf16, fp16");
}

int64_t overlap_partials_cuda(int64_t x_ptr, int64_t scale_ptr, int64_t n, int64_t m, int64_t ld,
                              const std::string& precision, bool stats, int64_t row_key_ptr,
                              int64_t row_sq_ptr, int64_t block_sums_ptr, int64_t max_blocks,
                              int64_t bins, int64_t hist_ptr, int64_t topk, int64_t cand_cap,
                              int64_t cand_count_ptr, int64_t cand_val_ptr, int64_t cand_ij_ptr,
                              double thr_value, int64_t thr_i, int64_t thr_j, int64_t stream,
                              int64_t split) {
  sk::cuda::OverlapArgs a;
  int64_t elem = 0;
  a.precision = precision_code(precision, &elem);
  SK_CHECK(n >= 0, "n must be >= 0, got ", n);
  SK_CHECK(n <= sk::cuda::kMaxRows, "n=", n, " exceeds the kernel's limit of ",
           sk::cuda::kMaxRows, " rows (pair indices are packed in 32 bits)");
  SK_CHECK(m >= 1, "m must be >= 1, got ", m);
  const int64_t align = 16 / elem;  // elements per 16-byte cp.async chunk
  const int64_t m_pad = (m + align - 1) / align * align;
  SK_CHECK(ld % align == 0, "ld=", ld, " must be a multiple of ", align, " elements (16 bytes of ",
           precision, "); pad the rows");
  SK_CHECK(ld >= m_pad, "ld=", ld, " must be >= m=", m, " rounded up to ", align, " elements (",
           m_pad, ")");
  SK_CHECK(n == 0 || ld <= std::numeric_limits<int64_t>::max() / elem / n, "n*ld*", elem,
           " bytes overflows int64 (n=", n, ", ld=", ld, ")");
  check_ptr(x_ptr, "x_ptr", 16);
  check_ptr(scale_ptr, "scale_ptr", 4);
  if (stats) {
    check_ptr(row_key_ptr, "row_key_ptr", 8);
    check_ptr(row_sq_ptr, "row_sq_ptr", 8);
    check_ptr(block_sums_ptr, "block_sums_ptr", 8);
    SK_CHECK(max_blocks >= 1 && max_blocks <= (int64_t{1} << 31) - 1,
             "max_blocks must be in [1, 2^31), got ", max_blocks);
  }
  SK_CHECK(bins >= 0 && bins <= (int64_t{1} << 24), "bins must be in [0, 2^24], got ", bins);
  if (bins > 0) {
    SK_CHECK(stats, "bins=", bins, " needs stats=True (the histogram is part of the stats pass)");
    check_ptr(hist_ptr, "hist_ptr", 8);
  }
  SK_CHECK(split == 0 || (split > 0 && split < n && split % sk::cuda::kTileRows == 0),
           "split=", split, " must be 0 (all pairs) or a multiple of ", sk::cuda::kTileRows,
           " in (0, n=", n, ")");
  // n <= 2^30: no overflow either way.
  const int64_t pairs = split > 0 ? split * (n - split) : n * (n - 1) / 2;
  SK_CHECK(topk >= 0, "topk must be >= 0, got ", topk);
  SK_CHECK(topk <= pairs, "topk=", topk, " exceeds the number of pairs P=", pairs, " (n=", n, ")");
  if (topk > 0) {
    SK_CHECK(cand_cap > topk, "cand_cap=", cand_cap, " must exceed topk=", topk,
             " (the threshold-raising loop needs at least topk + 1 slots)");
    SK_CHECK(cand_cap <= (int64_t{1} << 40), "cand_cap=", cand_cap, " is implausibly large");
    check_ptr(cand_count_ptr, "cand_count_ptr", 8);
    check_ptr(cand_val_ptr, "cand_val_ptr", 4);
    check_ptr(cand_ij_ptr, "cand_ij_ptr", 8);
    SK_CHECK(!std::isnan(thr_value), "thr_value is NaN");
    SK_CHECK(thr_i >= 0 && thr_i <= std::numeric_limits<int32_t>::max(), "thr_i must be in [0, ",
             std::numeric_limits<int32_t>::max(), "], got ", thr_i);
    SK_CHECK(thr_j >= 0 && thr_j <= std::numeric_limits<int32_t>::max(), "thr_j must be in [0, ",
             std::numeric_limits<int32_t>::max(), "], got ", thr_j);
  } else {
    SK_CHECK(cand_cap == 0, "cand_cap=", cand_cap, " given with topk=0");
  }
  SK_CHECK(stats || topk > 0, "nothing to compute: stats=False and topk=0");
  SK_CHECK(stream >= 0, "stream must be a cudaStream_t handle (>= 0), got ", stream);

  a.x = x_ptr;
  a.scale = scale_ptr;
  a.n = n;
  a.m = m;
  a.ld = ld;
  a.split = split;
  a.stats = stats;
  a.row_key = stats ? row_key_ptr : 0;
  a.row_sq = stats ? row_sq_ptr : 0;
  a.block_sums = stats ? block_sums_ptr : 0;
  a.max_blocks = stats ? max_blocks : std::numeric_limits<int32_t>::max();
  a.bins = bins;
  a.hist = bins > 0 ? hist_ptr : 0;
  a.topk = topk;
  a.cand_cap = topk > 0 ? cand_cap : 0;
  a.cand_count = topk > 0 ? cand_count_ptr : 0;
  a.cand_val = topk > 0 ? cand_val_ptr : 0;
  a.cand_ij = topk > 0 ? cand_ij_ptr : 0;
  a.thr_value = thr_value;
  a.thr_i = thr_i;
  a.thr_j = thr_j;
  a.stream = stream;
  py::gil_scoped_release release;
  return sk::cuda::overlap_partials(a);
}

py::array_t<int64_t> tile_schedule(int64_t tiles_per_side, int64_t group, int64_t rect_a) {
  SK_CHECK(tiles_per_side >= 0 && tiles_per_side <= 4096,
           "tiles_per_side must be in [0, 4096], got ", tiles_per_side);
  SK_CHECK(group >= 1, "group must be >= 1, got ", group);
  SK_CHECK(rect_a >= 0 && (rect_a == 0 || rect_a < tiles_per_side), "rect_a=", rect_a,
           " must be 0 (triangular) or in (0, tiles_per_side=", tiles_per_side, ")");
  const int64_t count = rect_a > 0 ? rect_a * (tiles_per_side - rect_a)
                                   : tiles_per_side * (tiles_per_side + 1) / 2;
  py::array_t<int64_t> out({count, int64_t{2}});
  auto v = out.mutable_unchecked<2>();
  for (int64_t t = 0; t < count; ++t) {
    int64_t bi = 0, bj = 0;
    sk::cuda::tile_coords_host(t, tiles_per_side, group, rect_a, &bi, &bj);
    v(t, 0) = bi;
    v(t, 1) = bj;
  }
  return out;
}

constexpr const char* kDoc = R"doc(Enqueue the fused overlap kernel on a CUDA stream (asynchronous).

Pairs i < j of the n rows of X (n, ld) (or, with split=S, a multiple of 128 in (0, n), only the
cross pairs i < S <= j) (row stride ld; the first m columns are used, and the
kernel reads whole 16-byte chunks, so columns m .. m rounded up to 16 bytes must be zero), with
c_ij = (X_i . X_j * scale_i) * scale_j computed in `precision` ("fp32" exact FFMA; "tf32",
"bf16", "fp16" on tensor cores; X is fp32 for fp32/tf32, else bf16/fp16). All pointers are
device addresses (tensor.data_ptr()) on the current CUDA device; outputs are accumulated into,
so the caller zeroes them:
  stats=True:  row_key (n,) int64 atomicMax of (fp32 bits of |c| << 32 | 0xFFFFFFFF - j),
               row_sq (n,) int64 fixed-point sum of c^2 (scale 2^32), block_sums
               (max_blocks, 3) fp64 per-block (sum c, sum |c|, sum c^2), written, not added.
  bins > 0:    hist (bins,) int64 counts, bin = clamp(floor((c + 1) * (bins * 0.5f)), 0, bins-1).
  topk > 0:    every pair whose key (|c| desc, i asc, j asc) ranks at or above the threshold
               (thr_value, thr_i, thr_j) is appended: cand_count (1,) int64 += 1 per pair,
               cand_val (cand_cap,) fp32 signed c, cand_ij (cand_cap,) int64 i << 32 | j; pairs
               past cand_cap are counted, not stored. thr_value=-1 collects every pair.
Returns the number of blocks launched (rows of block_sums written); 0 when n < 2.
Raises ValueError on bad arguments and RuntimeError on CUDA errors (e.g. no driver).)doc";

}  // namespace
#endif

void register_cuda(py::module_& m) {
#ifdef SK_HAVE_CUDA
  m.def("cuda_device_count", &sk::cuda::device_count,
        "Number of CUDA devices the runtime sees (0 when there is no driver)");
  m.def("overlap_partials_cuda", &overlap_partials_cuda, kDoc, py::kw_only(), py::arg("x_ptr"),
        py::arg("scale_ptr"), py::arg("n"), py::arg("m"), py::arg("ld"), py::arg("precision"),
        py::arg("stats"), py::arg("row_key_ptr"), py::arg("row_sq_ptr"),
        py::arg("block_sums_ptr"), py::arg("max_blocks"), py::arg("bins"), py::arg("hist_ptr"),
        py::arg("topk"), py::arg("cand_cap"), py::arg("cand_count_ptr"),
        py::arg("cand_val_ptr"), py::arg("cand_ij_ptr"), py::arg("thr_value"),
        py::arg("thr_i"), py::arg("thr_j"), py::arg("stream"), py::arg("split") = 0);
  m.def("overlap_cuda_tile_schedule", &tile_schedule,
        "(tiles, 2) int64 (bi, bj) of the CUDA kernel's static tile order (host copy): the "
        "triangle bi <= bj, or with rect_a > 0 the split-mode rectangle bi < rect_a <= bj",
        py::arg("tiles_per_side"), py::arg("group"), py::arg("rect_a") = 0);
  m.def(
      "overlap_cuda_hist_layout",
      [](int64_t bins, int64_t smem_optin) {
        const sk::cuda::HistLayout h = sk::cuda::hist_layout(bins, smem_optin);
        py::dict d;
        d["words"] = h.words;
        d["copies"] = int64_t{1} << h.shift;
        d["global"] = h.global;
        d["smem_bytes"] = h.smem_bytes;
        return d;
      },
      "Where a launch with `bins` bins counts its histogram on a device whose per-block "
      "shared-memory limit is smem_optin bytes: {words, copies, global, smem_bytes} (host copy "
      "of the launcher's rule, for tests)",
      py::arg("bins"), py::arg("smem_optin"));
  m.def(
      "overlap_cuda_round_tf32",
      [](uint32_t bits) { return sk::cuda::round_tf32_bits(bits); },
      "fp32 bits rounded to tf32 as the kernel rounds its operands (host copy, for tests)",
      py::arg("bits"));
  py::dict cfg;
  cfg["tile"] = sk::cuda::kTileRows;
  cfg["group"] = sk::cuda::kTileGroup;
  cfg["max_rows"] = sk::cuda::kMaxRows;
  cfg["smem_hist_bins"] = sk::cuda::kSmemHistBins;  // at most; see overlap_cuda_hist_layout
  cfg["smem_base_bytes"] = sk::cuda::kSmemBaseBytes;
  cfg["row_sq_fixed_bits"] = sk::cuda::kRowSqFixedBits;
  m.attr("overlap_cuda_config") = cfg;
#else
  (void)m;
#endif
}
