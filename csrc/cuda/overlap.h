#pragma once
namespace sk::cuda {
int device_count();
}  // namespace sk::cuda
