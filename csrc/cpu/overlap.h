#pragma once
namespace sk::cpu {
int num_threads();
}  // namespace sk::cpu
