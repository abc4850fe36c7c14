// open_weights: picks the reader from what the path is.
#include "engine/weights.h"

#include <filesystem>

#include "engine/error.h"

namespace kvs {

std::unique_ptr<WeightSource> open_weights(const std::string& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::is_directory(path, ec)) return open_hf_weights(path);
    if (fs::exists(path, ec)) return open_gguf_weights(path);
    fail("model not found: '{}'", path);
}

}  // namespace kvs
