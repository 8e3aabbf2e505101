// Bindings of the C++ CPU kernels (csrc/cpu/). Validate, then forward.
#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>

#include "checks.h"
#include "cpu/overlap.h"

namespace py = pybind11;

void register_cpu(py::module_& m) {
  m.def("cpu_num_threads", &sk::cpu::num_threads, "OpenMP threads the CPU kernels use");
}
