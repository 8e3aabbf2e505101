// Bindings of the CUDA kernels (csrc/cuda/). Compiled by the host C++ compiler; when the
// extension was built without CUDA, the entry points are absent and `built_with_cuda` is False.
#include <pybind11/pybind11.h>

#include "checks.h"
#ifdef SK_HAVE_CUDA
#include "cuda/overlap.h"
#endif

namespace py = pybind11;

void register_cuda(py::module_& m) {
#ifdef SK_HAVE_CUDA
  m.def("cuda_device_count", &sk::cuda::device_count,
        "Number of CUDA devices the runtime sees (0 when there is no driver)");
#else
  (void)m;
#endif
}
