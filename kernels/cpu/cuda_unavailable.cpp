// The CUDA entry points of a build without CUDA (KVS_CUDA=OFF or no nvcc): every call returns
// Status::cuda_unavailable, so callers and tests link the same way in both builds.
#include "kernels/attend.h"
#include "kernels/device.h"
#include "kernels/ggml_blocks.h"
#include "kernels/mixed_attend.h"
#include "kernels/quant_pack.h"

namespace kvs::kernels {

int cuda_device_count(const char** why) {
    if (why) *why = "kvscope was built without CUDA (KVS_CUDA=OFF or nvcc not found)";
    return 0;
}
Status device_alloc(void** ptr, size_t) {
    if (ptr) *ptr = nullptr;
    return Status::cuda_unavailable;
}
Status device_free(void*) {
    return Status::cuda_unavailable;
}
Status copy_to_device(void*, const void*, size_t) {
    return Status::cuda_unavailable;
}
Status copy_to_host(void*, const void*, size_t) {
    return Status::cuda_unavailable;
}
Status device_memset(void*, int, size_t) {
    return Status::cuda_unavailable;
}
Status device_synchronize() {
    return Status::cuda_unavailable;
}

Status quant_pack_cuda(const float*, int, int, int, int, Axis, uint8_t*, void*) {
    return Status::cuda_unavailable;
}
Status quant_unpack_cuda(const uint8_t*, int, int, int, int, Axis, float*, void*) {
    return Status::cuda_unavailable;
}
Status zscore_pack_cuda(const float*, int, int, int, int, float, uint8_t*, void*) {
    return Status::cuda_unavailable;
}
Status block_pack_cuda(BlockFormat, const float*, int, int, uint8_t*, void*) {
    return Status::cuda_unavailable;
}
Status block_unpack_cuda(BlockFormat, const uint8_t*, int, int, float*, void*) {
    return Status::cuda_unavailable;
}
size_t mixed_attend_cuda_workspace_bytes(const PackedClass*, int, int) {
    return 0;
}
Status mixed_attend_cuda(const float*, int, int, const PackedClass*, int, float, float*, float*,
                         float*, int, void*, size_t, void*) {
    return Status::cuda_unavailable;
}
Status attend_cuda(const float*, const int32_t*, int, const float*, const float*, const int32_t*,
                   const float*, int, int, float, float*, float*, float*, void*) {
    return Status::cuda_unavailable;
}

}  // namespace kvs::kernels
