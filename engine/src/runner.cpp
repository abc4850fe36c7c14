#include "engine/runner.h"

#include <chrono>
#include <cmath>
#include <filesystem>

#include "engine/error.h"
#include "engine/gguf.h"
#include "engine/progress.h"

namespace kvs {

LoadedModel load_model(const std::string& path) {
    const auto t0 = std::chrono::steady_clock::now();
    LoadedModel lm;
    lm.weights = open_weights(path);
    lm.model = Model::load(*lm.weights);
    if (std::filesystem::is_directory(path)) {
        lm.tokenizer = std::make_unique<Tokenizer>(Tokenizer::from_hf_dir(path));
    } else {
        lm.tokenizer = std::make_unique<Tokenizer>(Tokenizer::from_gguf(GgufFile::open(path)));
    }
    if (lm.tokenizer->n_vocab() > lm.model->config().n_vocab)
        fail("{}: tokenizer has {} tokens but the embedding has {} rows", path,
             lm.tokenizer->n_vocab(), lm.model->config().n_vocab);
    lm.load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return lm;
}

namespace {

// The chunk loop of prefill / prefill_each: `sink(i, nt, part)` after each chunk's forward.
template <class Sink>
void run_chunks(const Model& m, const int32_t* tokens, int n, int pos0, KvCache& cache, int chunk,
                LogitsFor which, ForwardObserver* obs, Progress* progress, int64_t progress_base,
                Sink&& sink) {
    KVS_ASSERT(chunk > 0);
    std::vector<int32_t> pos(static_cast<size_t>(chunk));
    std::vector<float> part;
    for (int i = 0; i < n;) {
        const int nt = std::min({chunk, n - i, std::max(1, cache.max_chunk(pos0 + i))});
        for (int t = 0; t < nt; ++t) pos[size_t(t)] = pos0 + i + t;
        const bool last = i + nt == n;
        const LogitsFor w = which == LogitsFor::All              ? LogitsFor::All
                            : (which == LogitsFor::Last && last) ? LogitsFor::Last
                                                                 : LogitsFor::None;
        m.forward(tokens + i, pos.data(), nt, cache, w, part, obs);
        sink(i, nt, w, part);
        if (progress) progress->update(progress_base + i + nt);
        i += nt;
    }
}

}  // namespace

void prefill(const Model& m, const int32_t* tokens, int n, int pos0, KvCache& cache, int chunk,
             LogitsFor which, std::vector<float>& logits, ForwardObserver* obs, Progress* progress,
             int64_t progress_base) {
    const int n_vocab = m.config().n_vocab;
    if (which == LogitsFor::All) logits.assign(size_t(n) * n_vocab, 0.0f);
    run_chunks(m, tokens, n, pos0, cache, chunk, which, obs, progress, progress_base,
               [&](int i, int, LogitsFor w, const std::vector<float>& part) {
                   if (which == LogitsFor::All)
                       std::copy(part.begin(), part.end(), logits.begin() + size_t(i) * n_vocab);
                   else if (w == LogitsFor::Last)
                       logits = part;
               });
}

void prefill_each(const Model& m, const int32_t* tokens, int n, int pos0, KvCache& cache, int chunk,
                  const LogitRowsFn& on_rows, ForwardObserver* obs, Progress* progress,
                  int64_t progress_base) {
    run_chunks(m, tokens, n, pos0, cache, chunk, LogitsFor::All, obs, progress, progress_base,
               [&](int i, int nt, LogitsFor, const std::vector<float>& part) {
                   on_rows(i, nt, part.data());
               });
}

double log_prob(const float* logits, int n_vocab, int32_t target) {
    float mx = logits[0];
    for (int j = 1; j < n_vocab; ++j) mx = std::max(mx, logits[j]);
    double sum = 0;
    for (int j = 0; j < n_vocab; ++j) sum += std::exp(double(logits[j] - mx));
    return double(logits[target] - mx) - std::log(sum);
}

PerplexityResult perplexity(const Model& m, const std::vector<int32_t>& tokens, int ctx, int chunk,
                            std::vector<double>* logprobs, Progress* progress, KvCache* cache_in) {
    if (ctx < 2) fail("--ctx must be at least 2 (got {})", ctx);
    const auto t0 = std::chrono::steady_clock::now();
    PerplexityResult r;
    std::unique_ptr<DenseKvCache> dense;
    if (!cache_in) dense = std::make_unique<DenseKvCache>(m.kv_shape(), ctx);
    KvCache& cache = cache_in ? *cache_in : *dense;
    const int n_vocab = m.config().n_vocab;
    std::vector<float> logits;
    double nll = 0;
    if (logprobs) logprobs->clear();
    for (size_t w0 = 0; w0 + 1 < tokens.size(); w0 += size_t(ctx)) {
        const int n = int(std::min<size_t>(size_t(ctx), tokens.size() - w0));
        if (n < 2) break;
        cache.clear();
        prefill(m, tokens.data() + w0, n, 0, cache, chunk, LogitsFor::All, logits, nullptr,
                progress, int64_t(w0));
        for (int t = 0; t + 1 < n; ++t) {
            const double lp =
                log_prob(logits.data() + size_t(t) * n_vocab, n_vocab, tokens[w0 + size_t(t) + 1]);
            nll -= lp;
            if (logprobs) logprobs->push_back(lp);
            ++r.n_scored;
        }
        ++r.n_windows;
    }
    if (r.n_scored == 0)
        fail("text too short to score: {} token(s), need at least 2", tokens.size());
    r.mean_nll = nll / double(r.n_scored);
    r.perplexity = std::exp(r.mean_nll);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
}

}  // namespace kvs
