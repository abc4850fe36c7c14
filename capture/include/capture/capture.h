// Running a capture: the prompt goes through the model in chunks, then `n_generate` tokens are
// sampled one at a time; every forward call streams its layers to the TraceWriter (hook points),
// followed by the per-token rows (ids, positions, text, log-probability of the next token, top-k
// logits). Memory stays bounded: one chunk of logits and the writer's staging, besides the cache.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "capture/trace_writer.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

namespace kvs::capture {

// Which logits rows a capture records (--logits; trace attribute `logits`, trace_schema.h):
//   topk  every token: logprob, logits_lse and the top-16 (the LM head runs on every prompt row)
//   lse   every token: logprob and logits_lse; topk_ids -1, topk_logits NaN (the same LM head
//         cost, no top-k selection)
//   none  the prompt's rows have no logits (NaN, -1) but logprob and logits_lse of the last one
//         of each forward chunk (the LM head runs on one row per chunk, as in a plain prefill);
//         generated tokens keep all of theirs (decoding computes them anyway). Replay and the
//         viewer need none of them; perplexity from a trace (exp(-mean logprob)) needs topk or lse.
enum class LogitsMode { topk, lse, none };
const char* logits_mode_name(LogitsMode m);  // "topk", "lse", "none"
bool logits_mode_from_name(const std::string& s, LogitsMode* out);

struct CaptureRequest {
    std::vector<int32_t> prompt;  // token ids, at positions 0..
    int n_generate = 0;           // tokens to sample after the prompt (all go into the trace)
    SamplerParams sampling;       // greedy by default
    int chunk = 256;              // prompt tokens per forward call (at most; the cache may
                                  // take fewer: KvCache::max_chunk)
    KvCache* cache = nullptr;     // the cache to run on (null: a dense fp32 cache); it must
                                  // hold prompt + n_generate positions
    LogitsMode logits = LogitsMode::topk;  // must match TraceMeta::logits
};

struct CaptureResult {
    int64_t n_tokens = 0;            // tokens in the trace
    std::vector<int32_t> generated;  // the sampled tokens (an end-of-generation token included)
    bool interrupted = false;        // should_stop() ended it early
    double seconds = 0;
};

// Per-token rows of a block of logits [n, n_vocab]: log-sum-exp, top-k ids / logits, and
// log p(next[i]) (next[i] < 0: NaN). The log-probability is kvs::log_prob's to ~1e-8 (a
// vectorized float exp), so a trace's perplexity is the one `kvscope perplexity` prints.
struct LogitRows {
    std::vector<double> logprob;
    std::vector<float> lse;
    std::vector<int32_t> topk_ids;   // [n, kTopK]
    std::vector<float> topk_logits;  // [n, kTopK]
};
// topk = false: the top-k rows are left as "no logits" (ids -1, logits NaN).
LogitRows logit_rows(const float* logits, int n, int n_vocab, const int32_t* next,
                     bool topk = true);
// n rows without logits: logprob and lse NaN, top-k ids -1, logits NaN.
LogitRows no_logit_rows(int n);

// The longest token text of a vocabulary, in bytes: TraceMeta::text_width for its traces.
int max_token_bytes(const Tokenizer& tok);

// tok (optional) gives each token's text and stops generation after an end-of-generation token.
// should_stop (optional) is polled before each forward call; once it returns true the capture
// ends after the current call (the trace then holds the tokens done so far). progress (optional)
// is called after each forward call with the number of tokens done.
CaptureResult run_capture(const Model& m, const Tokenizer* tok, const CaptureRequest& req,
                          TraceWriter& w, const std::function<bool()>& should_stop = {},
                          const std::function<void(int64_t)>& progress = {});

}  // namespace kvs::capture
