// pybind11 module superkern._C. Each backend registers its own functions; this file only
// assembles the module and reports how it was built. The module links no libtorch: CPU
// entry points take numpy arrays, CUDA entry points take device pointers allocated by the
// Python launcher (torch), so an isolated build never needs torch.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void register_cpu(py::module_& m);
void register_cuda(py::module_& m);

PYBIND11_MODULE(_C, m) {
  m.doc() = "superkern compiled kernels (C++ CPU, optional CUDA)";
#ifdef SK_HAVE_CUDA
  m.attr("built_with_cuda") = true;
#else
  m.attr("built_with_cuda") = false;
#endif
#ifdef SK_HAVE_OPENMP
  m.attr("built_with_openmp") = true;
#else
  m.attr("built_with_openmp") = false;
#endif
  register_cpu(m);
  register_cuda(m);
}
