#include "cpu/overlap.h"
#ifdef SK_HAVE_OPENMP
#include <omp.h>
#endif
namespace sk::cpu {
int num_threads() {
#ifdef SK_HAVE_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}
}  // namespace sk::cpu
