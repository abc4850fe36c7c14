// kvscope perplexity: perplexity of a model on a text file.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "common.h"
#include "engine/error.h"
#include "engine/progress.h"
#include "engine/runner.h"
#include "live_options.h"

namespace kvs::cli {

namespace {

struct PerplexityArgs {
    std::string model, text_file;
    int ctx = 512, chunk = 256;
    int64_t max_tokens = 0;
    bool json = false, quiet = false;
    LiveArgs live;
};

void run_perplexity(const PerplexityArgs& a) {
    const std::string text = read_text_file(a.text_file);
    LoadedModel lm = load_model(a.model);
    std::vector<int32_t> ids = lm.tokenizer->encode(text, false, false);
    if (a.max_tokens > 0 && int64_t(ids.size()) > a.max_tokens) ids.resize(size_t(a.max_tokens));
    if (ids.size() < 2)
        fail("text file '{}' has {} token(s), need at least 2", a.text_file, ids.size());
    const int n_ctx = lm.model->config().n_ctx_train;
    if (n_ctx > 0 && a.ctx > n_ctx)
        fail("--ctx {} exceeds the model's context length {}", a.ctx, n_ctx);
    Progress bar("perplexity", int64_t(ids.size()), a.quiet);
    std::unique_ptr<sim::LiveCache> live;
    if (!a.live.policy.empty()) {
        if (a.live.mode == "prefill")
            fail("perplexity --policy runs in stream mode (for prefill mode use kvscope eval)");
        live = make_live_cache(*lm.model, sim::parse_spec(a.live.policy), a.live, a.ctx, 0, false);
    }
    const PerplexityResult r =
        perplexity(*lm.model, ids, a.ctx, a.chunk, nullptr, &bar, live.get());
    bar.finish();
    const double tps = double(r.n_scored + r.n_windows) / r.seconds;
    if (a.json) {
        nlohmann::json j = {{"model", lm.weights->path()},
                            {"text_file", a.text_file},
                            {"ctx", a.ctx},
                            {"perplexity", r.perplexity},
                            {"mean_nll", r.mean_nll},
                            {"tokens_scored", r.n_scored},
                            {"windows", r.n_windows},
                            {"seconds", r.seconds},
                            {"tokens_per_second", tps},
                            {"policy", a.live.policy.empty() ? "" : live->spec().canonical}};
        fmt::print("{}\n", j.dump());
    } else {
        fmt::print(
            "perplexity: {:.4f}  ({} tokens scored in {} window(s) of {}; {:.1f} tokens/s)\n",
            r.perplexity, r.n_scored, r.n_windows, a.ctx, tps);
    }
}

}  // namespace

void register_perplexity(CLI::App& app) {
    auto a = std::make_shared<PerplexityArgs>();
    CLI::App* c = app.add_subcommand("perplexity", "Perplexity of the model on a text file");
    add_model_option(*c, a->model);
    c->add_option("-f,--text-file", a->text_file, "Text to score")->required();
    c->add_option("-c,--ctx", a->ctx, "Window length in tokens")
        ->check(CLI::Range(2, 1 << 20))
        ->capture_default_str();
    c->add_option("--chunk", a->chunk, "Tokens per forward call")
        ->check(CLI::Range(1, 1 << 16))
        ->capture_default_str();
    c->add_option("--max-tokens", a->max_tokens, "Score only the first N tokens (0 = all)")
        ->check(CLI::NonNegativeNumber);
    add_live_options(*c, a->live);
    c->add_flag("--json", a->json, "One JSON object on stdout");
    c->add_flag("-q,--quiet", a->quiet, "No progress bar");
    c->callback([a] { run_perplexity(*a); });
}

}  // namespace kvs::cli
