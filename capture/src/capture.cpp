#include "capture/capture.h"

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include "engine/error.h"
#include "engine/kv_cache.h"

namespace kvs::capture {

const char* logits_mode_name(LogitsMode m) {
    return m == LogitsMode::topk ? "topk" : m == LogitsMode::lse ? "lse" : "none";
}

bool logits_mode_from_name(const std::string& s, LogitsMode* out) {
    for (LogitsMode m : {LogitsMode::topk, LogitsMode::lse, LogitsMode::none})
        if (s == logits_mode_name(m)) {
            *out = m;
            return true;
        }
    return false;
}

LogitRows no_logit_rows(int n) {
    LogitRows r;
    r.logprob.assign(size_t(n), std::nan(""));
    r.lse.assign(size_t(n), std::nanf(""));
    r.topk_ids.assign(size_t(n) * kTopK, -1);
    r.topk_logits.assign(size_t(n) * kTopK, std::nanf(""));
    return r;
}

LogitRows logit_rows(const float* logits, int n, int n_vocab, const int32_t* next, bool topk) {
    LogitRows r;
    r.logprob.resize(size_t(n));
    r.lse.resize(size_t(n));
    r.topk_ids.resize(size_t(n) * kTopK);
    r.topk_logits.resize(size_t(n) * kTopK);
    const int k = std::min(kTopK, n_vocab);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; ++i) {
        const float* x = logits + size_t(i) * size_t(n_vocab);
        // kvs::log_prob's arithmetic (runner.cpp: max in float, sum of exp in double) with a
        // vectorized float exp: the same log-probabilities to ~1e-8, several times faster.
        const Eigen::Map<const Eigen::ArrayXf> xa(x, n_vocab);
        const float mx = xa.maxCoeff();
        // An Eigen array, so always aligned: into a buffer of another alignment, Eigen would
        // peel a different number of leading elements to its scalar exp, whose last bits differ
        // from the vectorized one, and the log-probabilities would depend on which thread (which
        // thread_local buffer) computed the row (found by the 1 vs 2 threads test, cli_edges).
        thread_local Eigen::ArrayXf e;
        e.resize(n_vocab);
        e = (xa - mx).exp();
        double acc[4] = {0, 0, 0, 0};
        int j = 0;
        for (; j + 4 <= n_vocab; j += 4)
            for (int l = 0; l < 4; ++l) acc[l] += double(e(j + l));
        for (; j < n_vocab; ++j) acc[0] += double(e(j));
        const double ls = std::log((acc[0] + acc[1]) + (acc[2] + acc[3]));
        r.lse[size_t(i)] = float(double(mx) + ls);
        r.logprob[size_t(i)] = next[i] >= 0 ? double(x[next[i]] - mx) - ls : std::nan("");
        // Top-k by insertion into a sorted list (descending; ties keep the lower id first).
        int32_t* ids = &r.topk_ids[size_t(i) * kTopK];
        float* val = &r.topk_logits[size_t(i) * kTopK];
        if (!topk) {  // --logits lse: no selection
            std::fill(ids, ids + kTopK, -1);
            std::fill(val, val + kTopK, std::nanf(""));
            continue;
        }
        int have = 0;
        for (int j = 0; j < n_vocab; ++j) {
            const float v = x[j];
            if (have == k && !(v > val[k - 1])) continue;
            int p = have < k ? have++ : k - 1;
            while (p > 0 && val[p - 1] < v) {
                val[p] = val[p - 1];
                ids[p] = ids[p - 1];
                --p;
            }
            val[p] = v;
            ids[p] = j;
        }
        for (int j = k; j < kTopK; ++j) {  // a vocabulary smaller than k: pad
            ids[j] = -1;
            val[j] = -INFINITY;
        }
    }
    return r;
}

int max_token_bytes(const Tokenizer& tok) {
    size_t n = 1;
    for (int32_t id = 0; id < tok.n_vocab(); ++id) n = std::max(n, tok.token_text(id).size());
    return int(n);
}

CaptureResult run_capture(const Model& m, const Tokenizer* tok, const CaptureRequest& req,
                          TraceWriter& w, const std::function<bool()>& should_stop,
                          const std::function<void(int64_t)>& progress) {
    const auto t_start = std::chrono::steady_clock::now();
    const int P = int(req.prompt.size());
    KVS_ASSERT(P > 0 && req.chunk > 0 && req.n_generate >= 0);
    const int n_vocab = m.config().n_vocab;
    CaptureResult res;
    std::unique_ptr<DenseKvCache> dense;
    if (!req.cache) dense = std::make_unique<DenseKvCache>(m.kv_shape(), P + req.n_generate);
    KvCache& cache = req.cache ? *req.cache : *dense;
    Sampler sampler(req.sampling);
    std::vector<float> logits;
    std::vector<int32_t> pos(size_t(req.chunk)), next(size_t(req.chunk));
    std::vector<std::string> text;
    auto stop = [&] { return should_stop && should_stop(); };

    // Appends the rows of tokens ids[0..n) at positions pos0.. whose logits were just computed
    // (--logits none: the last row's alone).
    const bool all_rows = req.logits != LogitsMode::none;
    auto append = [&](const int32_t* ids, int n, int pos0, const int32_t* nxt) {
        LogitRows r;
        if (all_rows || n == 1) {
            r = logit_rows(logits.data(), n, n_vocab, nxt, req.logits != LogitsMode::lse);
        } else {
            r = no_logit_rows(n);
            const LogitRows last = logit_rows(logits.data(), 1, n_vocab, nxt + n - 1, false);
            r.logprob[size_t(n - 1)] = last.logprob[0];
            r.lse[size_t(n - 1)] = last.lse[0];
        }
        text.resize(size_t(n));
        for (int t = 0; t < n; ++t) {
            pos[size_t(t)] = pos0 + t;
            // (A model may have more embedding rows than its tokenizer has tokens.)
            text[size_t(t)] = tok && ids[t] < tok->n_vocab() ? tok->token_text(ids[t]) : "";
        }
        TokenRows rows;
        rows.n = n;
        rows.ids = ids;
        rows.pos = pos.data();
        rows.text = text.data();
        rows.logprob = r.logprob.data();
        rows.logits_lse = r.lse.data();
        rows.topk_ids = r.topk_ids.data();
        rows.topk_logits = r.topk_logits.data();
        w.append_tokens(rows);
        res.n_tokens += n;
        if (progress) progress(res.n_tokens);
    };

    // Prompt, in chunks.
    int32_t sampled = -1;
    for (int i = 0; i < P;) {
        if (stop()) {
            res.interrupted = true;
            break;
        }
        const int nt = std::min({req.chunk, P - i, std::max(1, cache.max_chunk(i))});
        for (int t = 0; t < nt; ++t) pos[size_t(t)] = i + t;
        m.forward(req.prompt.data() + i, pos.data(), nt, cache,
                  all_rows ? LogitsFor::All : LogitsFor::Last, logits, &w);
        const bool last = i + nt == P;
        const float* last_row = logits.data() + (all_rows ? size_t(nt - 1) * n_vocab : 0);
        if (last && req.n_generate > 0) sampled = sampler.sample(last_row, n_vocab);
        for (int t = 0; t < nt; ++t)
            next[size_t(t)] = i + t + 1 < P ? req.prompt[size_t(i + t + 1)] : sampled;
        append(req.prompt.data() + i, nt, i, next.data());
        i += nt;
    }

    // Generation: every sampled token is run through the model (so its q/k/v are in the trace);
    // a stop request ends it after the token in flight.
    while (!res.interrupted && sampled >= 0) {
        const int32_t id = sampled;
        res.generated.push_back(id);
        const int32_t p = P + int(res.generated.size()) - 1;
        pos[0] = p;
        m.forward(&id, &pos[0], 1, cache, LogitsFor::Last, logits, &w);
        const bool eog = tok && tok->is_eog(id);
        const bool more = int(res.generated.size()) < req.n_generate && !eog;
        if (more && stop()) res.interrupted = true;
        sampled = more && !res.interrupted ? sampler.sample(logits.data(), n_vocab) : -1;
        append(&id, 1, p, &sampled);
    }
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    return res;
}

}  // namespace kvs::capture
