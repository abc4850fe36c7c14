// kvscope generate: text from a prompt (optionally in the model's chat template).
#include <fmt/format.h>

#include <chrono>
#include <cstdio>

#include "common.h"
#include "engine/error.h"
#include "engine/runner.h"
#include "engine/sampler.h"
#include "live_options.h"

namespace kvs::cli {

namespace {

struct GenerateArgs {
    std::string model, prompt;
    bool chat = false, quiet = false;
    int n_predict = 64;
    SamplerParams sp;
    LiveArgs live;
};

void run_generate(const GenerateArgs& a) {
    if (!a.live.policy.empty()) {  // bad options fail before the model loads
        sim::parse_spec(a.live.policy);
        parse_mode(a.live.mode);
        parse_kv_dtype(a.live.kv_dtype);
    }
    LoadedModel lm = load_model(a.model);
    const Model& m = *lm.model;
    const Tokenizer& tok = *lm.tokenizer;
    const std::string text =
        a.chat ? tok.apply_chat_template({{"user", a.prompt}}, true) : a.prompt;
    std::vector<int32_t> ids = tok.encode(text, false, a.chat);
    if (ids.empty()) fail("the prompt is empty");
    const int n_ctx = m.config().n_ctx_train > 0 ? m.config().n_ctx_train : 4096;
    if (int(ids.size()) + a.n_predict > n_ctx)
        fail("prompt ({} tokens) + {} new tokens exceeds the context length {}", ids.size(),
             a.n_predict, n_ctx);
    const int capacity = int(ids.size()) + a.n_predict;
    std::unique_ptr<KvCache> cache_ptr;
    if (a.live.policy.empty()) {
        cache_ptr = std::make_unique<DenseKvCache>(m.kv_shape(), capacity);
    } else {
        cache_ptr = make_live_cache(m, sim::parse_spec(a.live.policy), a.live, capacity,
                                    int64_t(ids.size()), false, ids);
    }
    KvCache& cache = *cache_ptr;
    if (!a.quiet)
        fmt::print(stderr, "model: {} ({:.1f}M params, loaded in {:.2f}s)\n",
                   lm.weights->describe(), double(m.n_params()) / 1e6, lm.load_seconds);
    std::vector<float> logits;
    const auto t0 = std::chrono::steady_clock::now();
    prefill(m, ids.data(), int(ids.size()), 0, cache, 256, LogitsFor::Last, logits);
    const auto t1 = std::chrono::steady_clock::now();
    Sampler sampler(a.sp);
    fmt::print("{}", a.chat ? a.prompt + "\n" : text);
    std::fflush(stdout);
    std::vector<int32_t> out;
    std::string printed;
    for (int i = 0; i < a.n_predict; ++i) {
        const int32_t id = sampler.sample(logits.data(), m.config().n_vocab);
        if (tok.is_eog(id)) break;
        out.push_back(id);
        // Print only complete UTF-8: decode everything so far and emit the new suffix.
        std::string s = tok.decode(out);
        if (s.size() > printed.size() && (uint8_t(s.back()) < 0x80 || i + 1 == a.n_predict)) {
            fmt::print("{}", s.substr(printed.size()));
            std::fflush(stdout);
            printed = s;
        }
        const int32_t pos = int32_t(ids.size() + out.size() - 1);
        m.forward(&id, &pos, 1, cache, LogitsFor::Last, logits);
    }
    const std::string all = tok.decode(out);
    if (all.size() > printed.size()) fmt::print("{}", all.substr(printed.size()));
    fmt::print("\n");
    std::fflush(stdout);
    const auto t2 = std::chrono::steady_clock::now();
    const double sp = std::chrono::duration<double>(t1 - t0).count();
    const double sd = std::chrono::duration<double>(t2 - t1).count();
    if (!a.quiet)
        fmt::print(stderr,
                   "prompt: {} tokens, {:.1f} tokens/s | generated: {} tokens, {:.1f} tokens/s | "
                   "KV cache {:.2f} MiB\n",
                   ids.size(), double(ids.size()) / sp, out.size(),
                   out.empty() ? 0.0 : double(out.size()) / sd,
                   double(cache.bytes()) / double(1 << 20));
}

}  // namespace

void register_generate(CLI::App& app) {
    auto a = std::make_shared<GenerateArgs>();
    CLI::App* c = app.add_subcommand("generate", "Generate text from a prompt");
    add_model_option(*c, a->model);
    c->add_option("-p,--prompt", a->prompt, "Prompt text")->required();
    c->add_flag("--chat", a->chat, "Wrap the prompt in the model's chat template");
    c->add_option("-n,--n-predict", a->n_predict, "Tokens to generate")
        ->check(CLI::Range(1, 1 << 20))
        ->capture_default_str();
    add_sampling_options(*c, a->sp);
    c->add_option("--seed", a->sp.seed, "Random seed")->capture_default_str();
    add_live_options(*c, a->live);
    c->add_flag("-q,--quiet", a->quiet, "No model info or speed on stderr");
    c->callback([a] { run_generate(*a); });
}

}  // namespace kvs::cli
