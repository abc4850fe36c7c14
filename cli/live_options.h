// --policy / --mode / --kv-dtype: run the engine on a compressed cache (simulator/live_cache.h).
// Shared by generate, perplexity, capture and eval.
#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "engine/model.h"
#include "simulator/live_cache.h"

namespace kvs::cli {

struct LiveArgs {
    std::string policy;  // a spec ("h2o:budget=256"); empty: the dense fp32 cache
    std::string mode = "stream";
    std::string kv_dtype = "f16";
};

// with_policy = false: only --mode and --kv-dtype (eval takes repeated --policy itself).
void add_live_options(CLI::App& app, LiveArgs& a, bool with_policy = true);

sim::Mode parse_mode(const std::string& s);
sim::Precision parse_kv_dtype(const std::string& s);

// The compressed cache for spec `spec` over positions [0, capacity); prompt_len is P in prefill
// mode; `tokens`: the token ids known up front (policies that plan from token identity). Throws
// kvs::Error (one line) for a spec that cannot run live, a budget above the
// context, a prompt that leaves nothing to compress.
std::unique_ptr<sim::LiveCache> make_live_cache(const Model& m, const sim::PolicySpec& spec,
                                                const LiveArgs& a, int64_t capacity,
                                                int64_t prompt_len, bool record,
                                                std::vector<int32_t> tokens = {});

}  // namespace kvs::cli
