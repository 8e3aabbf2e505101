// Argument checks shared by every binding: validate, then forward. Errors become Python
// ValueError (pybind11 maps std::invalid_argument to ValueError).
#pragma once
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace sk {

template <typename... Args>
[[noreturn]] inline void fail(Args&&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw std::invalid_argument(os.str());
}

#define SK_CHECK(cond, ...)                 \
  do {                                      \
    if (!(cond)) ::sk::fail(__VA_ARGS__);   \
  } while (0)

}  // namespace sk
