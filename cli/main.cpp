// kvscope: command-line entry point. Subcommands live in cmd_<name>.cpp.
#include <cstdio>

#include "common.h"
#include "engine/error.h"

namespace kvs::cli {

void add_model_option(CLI::App& app, std::string& model) {
    model = KVS_DEFAULT_MODEL;
    app.add_option("-m,--model", model, "GGUF file or Hugging Face model folder")
        ->capture_default_str();
}

namespace {
std::string g_command_line;
}

const std::string& command_line() {
    return g_command_line;
}

// argv joined with spaces, single-quoting any argument a shell would split or expand.
static std::string join_argv(int argc, char** argv) {
    std::string out;
    for (int i = 0; i < argc; ++i) {
        const std::string a = argv[i];
        if (i > 0) out += ' ';
        const bool plain =
            !a.empty() &&
            a.find_first_not_of(
                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:,=+@%") ==
                std::string::npos;
        if (plain) {
            out += a;
            continue;
        }
        out += '\'';
        for (char c : a) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
        out += '\'';
    }
    return out;
}

void add_sampling_options(CLI::App& app, SamplerParams& sp) {
    app.add_option("--temp", sp.temperature, "Sampling temperature (0 = greedy)")
        ->check(CLI::Range(0.0, 100.0))
        ->capture_default_str();
    app.add_option("--top-p", sp.top_p, "Nucleus sampling mass")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    app.add_option("--top-k", sp.top_k, "Keep the k most likely tokens (0 = off)")
        ->check(CLI::NonNegativeNumber);
}

}  // namespace kvs::cli

int main(int argc, char** argv) {
    CLI::App app{"kvscope " KVS_VERSION ": a lab for KV-cache compression research"};
    app.require_subcommand(1);
    app.set_version_flag("--version", KVS_VERSION);
    kvs::cli::register_generate(app);
    kvs::cli::register_perplexity(app);
    kvs::cli::register_bench(app);
    kvs::cli::register_capture(app);
    kvs::cli::register_info(app);
    kvs::cli::register_replay(app);
    kvs::cli::register_eval(app);
    kvs::cli::register_figures(app);
    kvs::cli::g_command_line = kvs::cli::join_argv(argc, argv);
    try {
        app.parse(argc, argv);
    } catch (const kvs::cli::ExitStatus& e) {
        return e.code;
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    } catch (const kvs::Error& e) {
        std::fprintf(stderr, "kvscope: error: %s\n", e.what());
        return 1;
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "kvscope: error: out of memory\n");
        return 1;
    }
    return 0;
}
