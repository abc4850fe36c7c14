// The target table and the scratch-file helpers shared by every fuzz target.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "fuzz_entries.h"

namespace kvs::fuzz {

const std::vector<Target>& targets() {
    static const std::vector<Target> t = {
        {"gguf", gguf},
        {"dequant", dequant},
        {"safetensors", safetensors},
        {"hf_config", hf_config},
        {"tokenizer_json", tokenizer_json},
        {"tokenizer_gguf", tokenizer_gguf},
        {"tokenizer_text", tokenizer_text},
        {"chat_template", chat_template},
        {"trace", trace},
        {"results", results},
        {"policy_spec", policy_spec},
    };
    return t;
}

const Target* find_target(const std::string& name) {
    for (const Target& t : targets())
        if (name == t.name) return &t;
    return nullptr;
}

static const std::filesystem::path& scratch_root() {
    static const std::filesystem::path root = [] {
        std::error_code ec;
        std::filesystem::path base = std::filesystem::is_directory("/dev/shm", ec)
                                         ? std::filesystem::path("/dev/shm")
                                         : std::filesystem::temp_directory_path();
        std::filesystem::path p = base / ("kvs-fuzz-" + std::to_string(::getpid()));
        std::filesystem::create_directories(p);
        // Removed at exit (libFuzzer exits through exit() at the end of a run).
        static struct Cleanup {
            std::filesystem::path p;
            ~Cleanup() {
                std::error_code e;
                std::filesystem::remove_all(p, e);
            }
        } cleanup{p};
        return p;
    }();
    return root;
}

std::string scratch_dir(const std::string& name) {
    const std::filesystem::path p = scratch_root() / name;
    std::filesystem::create_directories(p);
    return p.string();
}

std::string scratch_file(const std::string& name, const uint8_t* data, size_t size) {
    const std::string path = (scratch_root() / name).string();
    ::unlink(path.c_str());
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        std::perror(path.c_str());
        std::abort();
    }
    size_t done = 0;
    while (done < size) {
        const ssize_t n = ::write(fd, data + done, size - done);
        if (n <= 0) {
            std::perror(path.c_str());
            std::abort();
        }
        done += size_t(n);
    }
    ::close(fd);
    return path;
}

void check_error(const char* what) {
    if (what == nullptr || what[0] == '\0') {
        std::fprintf(stderr, "kvs::fuzz: a kvs::Error with an empty message\n");
        std::abort();
    }
}

}  // namespace kvs::fuzz

// HDF5 1.10 leaks a few small buffers on some error paths when it opens a damaged file; they
// are not kvscope's (tests/capture/test_trace_errors.cpp does the same). LeakSanitizer still
// reports every leak outside libhdf5.
extern "C" const char* __lsan_default_suppressions() {
    return "leak:libhdf5\n";
}
