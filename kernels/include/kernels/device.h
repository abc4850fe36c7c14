// Minimal device-memory helpers so that tests and tools can drive the *_cuda entry points
// without including CUDA headers. In a build without CUDA, cuda_device_count() returns 0 (with a
// reason) and everything else returns Status::cuda_unavailable.
#pragma once
#include <cstddef>

#include "kernels/common.h"

namespace kvs::kernels {

// Number of usable CUDA devices; 0 when none, when the driver or runtime fails, or when built
// without CUDA. When it returns 0 and `why` is not null, *why points to a static message.
int cuda_device_count(const char** why);

Status device_alloc(void** ptr, size_t bytes);  // cudaMalloc
Status device_free(void* ptr);                  // cudaFree (nullptr is fine)
Status copy_to_device(void* dst, const void* src, size_t bytes);
Status copy_to_host(void* dst, const void* src, size_t bytes);
Status device_memset(void* dst, int byte, size_t bytes);
Status device_synchronize();  // also reports errors of kernels launched earlier

}  // namespace kvs::kernels
