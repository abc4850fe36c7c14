// Small helpers shared by the .cu files of kernels/cuda (not part of the public API).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

#include "kernels/common.h"

namespace kvs::kernels::cuda {

inline cudaStream_t as_stream(void* s) {
    return static_cast<cudaStream_t>(s);
}

// Launch geometry of a grid-stride loop over n items (n > 0).
constexpr int kThreads = 256;
inline unsigned grid_for(size_t n, int threads = kThreads) {
    const size_t blocks = (n + size_t(threads) - 1) / size_t(threads);
    return unsigned(blocks < 65535u * 32u ? blocks : 65535u * 32u);
}

// Status of the launches just made (launch errors only; execution errors surface at sync).
inline Status launch_status() {
    return cudaGetLastError() == cudaSuccess ? Status::ok : Status::cuda_error;
}

}  // namespace kvs::kernels::cuda
