// Shared by every kernels/ op: the status code each entry point returns, and the macro that
// makes the scalar helpers in detail/ callable from host and device code alike.
//
// Conventions of every op header (kernels/include/kernels/<op>.h):
//  - `<op>_cpu(...)`: the readable reference (kernels/cpu/<op>.cpp); pointers are host memory.
//  - `<op>_cuda(..., void* stream)`: the CUDA version (kernels/cuda/<op>.cu); pointers are device
//    memory, `stream` is a cudaStream_t passed as void* (nullptr = the default stream). The call
//    only enqueues work; results are ready after the stream is synchronized. In a build without
//    CUDA these return Status::cuda_unavailable.
//  - raw pointers, shapes as ints, no framework types (no Eigen, HDF5 or engine headers).
#pragma once

#if defined(__CUDACC__)
#define KVS_HD __host__ __device__
#else
#define KVS_HD
#endif

namespace kvs::kernels {

enum class Status : int {
    ok = 0,
    invalid_argument,  // a shape, bit width, group size or pointer the op does not accept
    non_finite_input,  // NaN or +-inf in the input: the output is still fully written, by the
                       // op's documented non-finite policy (see its header)
    cuda_unavailable,  // built without CUDA (KVS_CUDA=OFF or no nvcc)
    cuda_error,        // a CUDA runtime call or kernel launch failed
};

// A short English description ("ok", "invalid argument", ...), never null.
const char* status_string(Status s);

}  // namespace kvs::kernels
