// Shared pieces of the kvscope subcommands.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "engine/sampler.h"

namespace kvs::cli {

// --model with the embedded default (models/SmolLM2-135M-Instruct.Q4_1.gguf).
void add_model_option(CLI::App& app, std::string& model);
// --temp, --top-p, --top-k (the seed is each command's own: its meaning differs).
void add_sampling_options(CLI::App& app, SamplerParams& sp);
std::string read_text_file(const std::string& path);  // throws kvs::Error (missing, empty)
// The command line kvscope was started with (recorded in traces).
const std::string& command_line();

// Thrown by a subcommand to exit with a given status after it reported what happened (e.g. 130
// after Ctrl-C: the capture wrote what it had). main() returns `code`.
struct ExitStatus {
    int code;
};

// Each subcommand registers itself; defined in cmd_<name>.cpp.
void register_generate(CLI::App& app);
void register_perplexity(CLI::App& app);
void register_bench(CLI::App& app);
void register_capture(CLI::App& app);
void register_info(CLI::App& app);
void register_replay(CLI::App& app);  // policies, replay, sweep, merge
void register_eval(CLI::App& app);
void register_figures(CLI::App& app);

}  // namespace kvs::cli
