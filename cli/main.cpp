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

}  // namespace kvs::cli

int main(int argc, char** argv) {
    CLI::App app{"kvscope " KVS_VERSION ": a lab for KV-cache compression research"};
    app.require_subcommand(1);
    app.set_version_flag("--version", KVS_VERSION);
    kvs::cli::register_generate(app);
    kvs::cli::register_perplexity(app);
    kvs::cli::register_bench(app);
    try {
        app.parse(argc, argv);
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
