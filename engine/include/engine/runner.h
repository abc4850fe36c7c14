// Running a model: loading (weights + tokenizer), chunked prefill, perplexity.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/model.h"
#include "engine/tokenizer.h"
#include "engine/weights.h"

namespace kvs {

class Progress;

struct LoadedModel {
    std::unique_ptr<WeightSource> weights;  // kept open: GGUF tensors stay mapped
    std::unique_ptr<Model> model;
    std::unique_ptr<Tokenizer> tokenizer;
    double load_seconds = 0;
};

// A GGUF file or a Hugging Face folder. Throws kvs::Error with the cause.
LoadedModel load_model(const std::string& path);

// Runs tokens[0..n) at positions pos0.. through the model in chunks of `chunk` tokens.
// Logits for the last token (or every token, row-major [n, n_vocab]) go to `logits`.
void prefill(const Model& m, const int32_t* tokens, int n, int pos0, KvCache& cache, int chunk,
             LogitsFor which, std::vector<float>& logits, ForwardObserver* obs = nullptr,
             Progress* progress = nullptr, int64_t progress_base = 0);

// The same, handing each chunk's logits (rows first .. first + count - 1, [count, n_vocab]) to
// `on_rows` as they come instead of keeping all n rows (n x n_vocab floats: 1.6 GB at 8192
// tokens of a 49152-token vocabulary).
using LogitRowsFn = std::function<void(int first, int count, const float* rows)>;
void prefill_each(const Model& m, const int32_t* tokens, int n, int pos0, KvCache& cache, int chunk,
                  const LogitRowsFn& on_rows, ForwardObserver* obs = nullptr,
                  Progress* progress = nullptr, int64_t progress_base = 0);

// log p(tokens[i+1] | tokens[0..i]) for each i of a row of logits: log-softmax at `target`.
double log_prob(const float* logits, int n_vocab, int32_t target);

struct PerplexityResult {
    double perplexity = 0;
    double mean_nll = 0;
    int64_t n_scored = 0;  // tokens whose probability was scored
    int n_windows = 0;
    double seconds = 0;
};

// Perplexity over non-overlapping windows of `ctx` tokens; each window starts with an empty
// cache and scores its tokens 1..ctx-1 (token 0 of a window has no context). A last window of
// fewer than 2 tokens is dropped. logprobs (optional) gets one entry per scored token.
// cache (optional): the cache to run on (cleared before each window; at least ctx positions);
// null: a dense fp32 cache.
PerplexityResult perplexity(const Model& m, const std::vector<int32_t>& tokens, int ctx, int chunk,
                            std::vector<double>* logprobs = nullptr, Progress* progress = nullptr,
                            KvCache* cache = nullptr);

}  // namespace kvs
