#include <cuda_runtime.h>
#include "cuda/overlap.h"
namespace sk::cuda {
int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}
}  // namespace sk::cuda
