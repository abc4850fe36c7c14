#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common.h"
#include "engine/error.h"

namespace kvs::cli {

std::string read_text_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail("cannot open text file '{}': {}", path, std::strerror(errno));
    std::ostringstream ss;
    ss << f.rdbuf();
    std::string s = ss.str();
    if (s.empty()) fail("text file '{}' is empty", path);
    return s;
}

}  // namespace kvs::cli
