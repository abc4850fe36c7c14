#include "kernels/common.h"

namespace kvs::kernels {

const char* status_string(Status s) {
    switch (s) {
        case Status::ok:
            return "ok";
        case Status::invalid_argument:
            return "invalid argument";
        case Status::non_finite_input:
            return "non-finite input (NaN or inf)";
        case Status::cuda_unavailable:
            return "built without CUDA";
        case Status::cuda_error:
            return "CUDA error";
    }
    return "unknown status";
}

}  // namespace kvs::kernels
