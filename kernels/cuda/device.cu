// Device-memory helpers (kernels/include/kernels/device.h) over the CUDA runtime.
#include <cuda_runtime.h>

#include "kernels/device.h"

namespace kvs::kernels {

namespace {
Status to_status(cudaError_t e) {
    return e == cudaSuccess ? Status::ok : Status::cuda_error;
}
}  // namespace

int cuda_device_count(const char** why) {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();  // clear the sticky-free error state of the runtime
        if (why) *why = cudaGetErrorString(e);
        return 0;
    }
    if (n == 0 && why) *why = "cudaGetDeviceCount returned 0 devices";
    return n;
}

Status device_alloc(void** ptr, size_t bytes) {
    return to_status(cudaMalloc(ptr, bytes));
}
Status device_free(void* ptr) {
    return to_status(cudaFree(ptr));
}
Status copy_to_device(void* dst, const void* src, size_t bytes) {
    return to_status(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
Status copy_to_host(void* dst, const void* src, size_t bytes) {
    return to_status(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}
Status device_memset(void* dst, int byte, size_t bytes) {
    return to_status(cudaMemset(dst, byte, bytes));
}
Status device_synchronize() {
    return to_status(cudaDeviceSynchronize());
}

}  // namespace kvs::kernels
