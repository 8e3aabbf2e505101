// Bindings of the C++ CPU kernels (csrc/cpu/). Validate, then forward; the GIL is released
// while the kernel runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "checks.h"
#include "cpu/overlap.h"

namespace py = pybind11;

namespace {

std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d)
    s += (d ? ", " : "") + std::to_string(a.shape(d));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// dtype, dimensionality, C-contiguity and alignment of an operand (itemsize 4: float32;
// 2: the 16-bit formats).
void check_array(const py::array& a, const char* name, py::ssize_t ndim, const py::dtype& want,
                 const char* want_name) {
  SK_CHECK(a.dtype().equal(want), name, " must be ", want_name, ", got dtype ",
           std::string(py::str(a.dtype())));
  SK_CHECK(a.ndim() == ndim, name, " must be ", ndim, "-D, got ", a.ndim(), "-D with shape ",
           shape_of(a));
  SK_CHECK((a.flags() & py::array::c_style) != 0, name, " must be C-contiguous (shape ",
           shape_of(a), "); pass numpy.ascontiguousarray(", name, ")");
  SK_CHECK(reinterpret_cast<std::uintptr_t>(a.data()) % a.itemsize() == 0, name,
           " data is not ", a.itemsize(), "-byte aligned");
}

void check_f32(const py::array& a, const char* name, py::ssize_t ndim) {
  check_array(a, name, ndim, py::dtype::of<float>(), "float32");
}

py::tuple overlap_partials_cpu(const py::array& X, const py::array& scale, int64_t bins,
                               int64_t topk, int num_threads, const std::string& kernel,
                               int64_t tile, const std::string& fmt) {
  sk::cpu::Format f = sk::cpu::Format::kF32;
  if (fmt == "bf16") {  // numpy has no bfloat16: the raw bits as uint16
    check_array(X, "X", 2, py::dtype::of<uint16_t>(), "uint16 (bf16 bits) for fmt='bf16'");
    f = sk::cpu::Format::kBF16;
  } else if (fmt == "f16") {
    check_array(X, "X", 2, py::dtype("float16"), "float16 for fmt='f16'");
    f = sk::cpu::Format::kF16;
  } else {
    SK_CHECK(fmt == "f32", "fmt must be 'f32', 'bf16' or 'f16', got '", fmt, "'");
    check_f32(X, "X", 2);
  }
  check_f32(scale, "scale", 1);
  const int64_t N = X.shape(0), m = X.shape(1);
  SK_CHECK(scale.shape(0) == N, "scale must have length N=", N, " (rows of X), got ",
           scale.shape(0));
  SK_CHECK(bins >= 0, "bins must be >= 0, got ", bins);
  // Bin arithmetic is fp32 (as the reference): bins * 0.5 and bins - 1 must be exact.
  SK_CHECK(bins <= (int64_t{1} << 24), "bins=", bins, " exceeds 2^24=16777216");
  const int64_t P = N < 2 ? 0 : (N % 2 == 0 ? (N / 2) * (N - 1) : N * ((N - 1) / 2));
  SK_CHECK(topk >= 0, "topk must be >= 0, got ", topk);
  SK_CHECK(topk <= P, "topk=", topk, " exceeds the number of pairs P=", P, " (N=", N, ")");
  SK_CHECK(num_threads >= 0, "num_threads must be >= 0 (0 = OpenMP default), got ", num_threads);
  SK_CHECK(tile >= 0 && tile % 48 == 0, "tile must be 0 (auto) or a positive multiple of 48, got ",
           tile);
  sk::cpu::Kernel k = sk::cpu::Kernel::kAuto;
  if (kernel == "avx2") {
    SK_CHECK(sk::cpu::has_avx2(), "kernel='avx2' was not compiled in (host without AVX2/FMA "
             "or SUPERKERN_PORTABLE build); use 'generic' or 'auto'");
    k = sk::cpu::Kernel::kAvx2;
  } else if (kernel == "generic") {
    k = sk::cpu::Kernel::kGeneric;
  } else {
    SK_CHECK(kernel == "auto", "kernel must be 'auto', 'avx2' or 'generic', got '", kernel, "'");
  }

  py::array_t<double> sums(3);
  py::array_t<int64_t> hist(bins);
  py::array_t<float> row_max(N);
  py::array_t<int64_t> row_arg(N);
  py::array_t<double> row_sq(N);
  py::array_t<float> topk_vals(topk);
  py::array_t<int64_t> topk_pairs(std::vector<py::ssize_t>{topk, 2});
  const sk::cpu::OverlapOut out{sums.mutable_data(),    hist.mutable_data(),
                                row_max.mutable_data(), row_arg.mutable_data(),
                                row_sq.mutable_data(),  topk_vals.mutable_data(),
                                topk_pairs.mutable_data()};
  const void* xp = X.data();
  const auto* sp = static_cast<const float*>(scale.data());
  {
    py::gil_scoped_release nogil;  // X and scale stay alive: the caller holds references
    sk::cpu::overlap_partials(xp, f, sp, N, m, bins, topk, num_threads, k, tile, out);
  }
  return py::make_tuple(sums, hist, row_max, row_arg, row_sq, topk_vals, topk_pairs);
}

}  // namespace

void register_cpu(py::module_& m) {
  m.def("cpu_num_threads", &sk::cpu::num_threads, "OpenMP threads the CPU kernels use");
  m.attr("cpu_has_avx2") = sk::cpu::has_avx2();
  m.def("cpu_default_tile", &sk::cpu::default_tile, py::arg("m"),
        "Tile edge the CPU overlap kernel uses for rows of width m");
  m.def("overlap_partials_cpu", &overlap_partials_cpu, py::arg("X"), py::arg("scale"),
        py::arg("bins"), py::arg("topk"), py::kw_only(), py::arg("num_threads") = 0,
        py::arg("kernel") = "auto", py::arg("tile") = 0, py::arg("fmt") = "f32",
        R"doc(Reductions over pairs i < j of c_ij = scale_i scale_j (X_i . X_j).

X: C-contiguous (N, m): float32 (fmt='f32'), float16 (fmt='f16') or the bits of bfloat16
as uint16 (fmt='bf16'), widened to fp32 exactly as they are packed; scale: float32 (N,);
bins >= 0; 0 <= topk <= N(N-1)/2. Keyword-only: num_threads (0 = OpenMP default; at most 4
per processor), kernel ('auto', 'avx2', 'generic'), tile (0 = auto, else a multiple of 48),
fmt. Returns (sums f64[3] =
(sum c, sum |c|, sum c^2), hist i64[bins], row_max f32[N], row_arg i64[N], row_sq f64[N],
topk_vals f32[k], topk_pairs i64[k, 2]). Bitwise identical for every num_threads.)doc");
}
