// kvscope figures: the standard figures of a KV-cache compression paper from results files.
// The figures are drawn in Python (python/kvscope/figures.py, matplotlib); this command finds
// that package and execs the Python interpreter on it with the arguments as given.
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>

#include "common.h"
#include "engine/error.h"

namespace kvs::cli {

namespace fs = std::filesystem;

namespace {

std::string self_exe() {
    std::error_code ec;
    const fs::path p = fs::read_symlink("/proc/self/exe", ec);
    return ec ? std::string() : p.string();
}

// The folder holding the kvscope Python package: $KVSCOPE_PYTHON_DIR, else python/ of the
// source tree kvscope was built from (there is no install step).
std::string python_dir() {
    std::vector<fs::path> tried;
    if (const char* env = std::getenv("KVSCOPE_PYTHON_DIR"); env && *env) tried.emplace_back(env);
    tried.emplace_back(fs::path(KVS_SOURCE_DIR) / "python");
    std::string looked;
    for (const auto& d : tried) {
        std::error_code ec;
        if (fs::is_regular_file(d / "kvscope" / "figures.py", ec)) return d.string();
        looked += (looked.empty() ? "" : ", ") + d.string();
    }
    fail(
        "figures: cannot find the kvscope Python package (kvscope/figures.py) in {}; set "
        "KVSCOPE_PYTHON_DIR",
        looked);
}

// Interpreter of the figures: $KVSCOPE_PYTHON, else /usr/bin/python3 (Debian's, which sees
// python3-matplotlib and python3-h5py; a python3 earlier on PATH may not).
std::string figures_python() {
    if (const char* env = std::getenv("KVSCOPE_PYTHON"); env && *env) return env;
    return "/usr/bin/python3";
}

}  // namespace

void register_figures(CLI::App& app) {
    auto* c = app.add_subcommand(
        "figures",
        "Paper figures (PDF + PNG + CSV) from results files: kvscope figures R.h5 ... [--trace "
        "T.h5] --out DIR (--help for all options)");
    // Every argument, --help included, goes to the Python program as given.
    c->set_help_flag();
    c->allow_extras();
    c->prefix_command();
    c->callback([c] {
        const std::string exe = self_exe();
        const std::string dir = python_dir();
        const std::string py = figures_python();
        if (access(py.c_str(), X_OK) != 0)
            fail(
                "figures: cannot run {} (figures need Python 3 with matplotlib and h5py; Debian: "
                "apt-get install python3-matplotlib python3-h5py; or set KVSCOPE_PYTHON)",
                py);
        const char* old = std::getenv("PYTHONPATH");
        const std::string path = dir + (old && *old ? ":" + std::string(old) : std::string());
        setenv("PYTHONPATH", path.c_str(), 1);
        std::vector<std::string> args = {py, "-B", "-s", "-m", "kvscope.figures"};
        if (!exe.empty()) {
            args.push_back("--kvscope-bin");
            args.push_back(exe);
        }
        for (const auto& a : c->remaining()) args.push_back(a);
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        std::fflush(stdout);
        std::fflush(stderr);
        execv(py.c_str(), argv.data());
        fail("figures: cannot run {}: {}", py, std::strerror(errno));
    });
}

}  // namespace kvs::cli
