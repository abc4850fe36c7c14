// Shared pieces of the kvscope subcommands.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

namespace kvs::cli {

// --model with the embedded default (models/SmolLM2-135M-Instruct.Q4_1.gguf).
void add_model_option(CLI::App& app, std::string& model);
std::string read_text_file(const std::string& path);  // throws kvs::Error (missing, empty)

// Each subcommand registers itself; defined in cmd_<name>.cpp.
void register_generate(CLI::App& app);
void register_perplexity(CLI::App& app);
void register_bench(CLI::App& app);

}  // namespace kvs::cli
