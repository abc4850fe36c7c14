// Pieces several policies share: eviction to a count by score, the SnapKV observation window
// (the last `window` queries' attention, pooled along positions), per-token storage bits.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <numeric>
#include <vector>

#include "engine/error.h"
#include "kernels/attend.h"
#include "simulator/policy.h"

namespace kvs::sim::detail {

// The first step a plan of the whole prompt can look at: P in prefill mode; in stream mode the
// first step whose cache (t + 1 tokens) exceeds the budget. -1 when there is none.
inline int64_t first_plan_step(const PlanContext& c, const Budget& b) {
    int64_t t0 = c.prefill_len;
    if (c.mode == Mode::stream) {
        t0 = 1;
        while (t0 < c.n_tokens && b.tokens(t0 + 1) >= t0 + 1) ++t0;
    }
    return t0 < c.n_tokens ? t0 : -1;
}

// Full causal attention of query head h of model layer `layer` over the trace's rows [0, T), for
// a plan pass (agacc scope=global, razor): row(t, p) gets query t's probabilities over keys
// 0 .. t (by the one attention routine, in blocks of 128 queries).
inline void plan_attention_rows(const PlanContext& c, int layer, int h, int64_t T,
                                const std::function<void(int64_t t, const float* p)>& row) {
    const int d = c.d;
    constexpr int64_t kBlock = 128;
    const std::vector<float> q = c.read(PlanField::q, layer, h, 0, T);
    const std::vector<float> k = c.read(PlanField::k, layer, c.kv_of_q[size_t(h)], 0, T);
    std::vector<int32_t> pos(static_cast<size_t>(T));
    for (int64_t j = 0; j < T; ++j) pos[size_t(j)] = int32_t(j);
    std::vector<float> probs(size_t(std::min(kBlock, T)) * size_t(T)),
        lse(static_cast<size_t>(kBlock));
    for (int64_t b0 = 0; b0 < T; b0 += kBlock) {
        const int64_t b1 = std::min(T, b0 + kBlock), nq = b1 - b0;
        KVS_ASSERT(kernels::attend_cpu(q.data() + size_t(b0) * size_t(d), pos.data() + b0, int(nq),
                                       k.data(), nullptr, pos.data(), nullptr, int(b1), d,
                                       c.attn_scale, nullptr, lse.data(),
                                       probs.data()) == kernels::Status::ok);
        for (int64_t i = 0; i < nq; ++i) row(b0 + i, probs.data() + size_t(i) * size_t(b1));
    }
}

constexpr float kProtected = std::numeric_limits<float>::infinity();

// The entries evict_to drops (drop[i] = 1): the n - keep lowest keys, ties (and protected
// tokens, key = +inf, when there are more of them than `keep`) oldest first. None when keep < 0
// or the unit holds at most `keep`.
inline std::vector<uint8_t> drop_set(const UnitStore& u, int64_t keep,
                                     const std::vector<float>& key) {
    const int n = u.size();
    std::vector<uint8_t> drop(size_t(n), 0);
    if (keep < 0 || n <= keep) return drop;
    std::vector<int> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    const int n_drop = int(n - keep);
    std::partial_sort(order.begin(), order.begin() + n_drop, order.end(), [&](int a, int b) {
        const float ka = key[size_t(a)], kb = key[size_t(b)];
        if (ka != kb) return ka < kb;
        return a < b;  // held order = token order: older first
    });
    for (int i = 0; i < n_drop; ++i) drop[size_t(order[size_t(i)])] = 1;
    return drop;
}

// Evicts from `u` until it holds at most `keep` tokens (drop_set's entries).
inline void evict_to(UnitStore& u, int64_t keep, const std::vector<float>& key) {
    if (keep < 0 || u.size() <= keep) return;
    u.evict_mask(drop_set(u, keep, key));
}

// key[i] = the policy score, +inf for the first `sinks` tokens of the sequence and the newest
// `recent` held tokens. Callers cap `recent` at half the budget (recent_cap): a recent window as
// large as the budget would turn any policy into a sliding window and evict its best tokens.
inline std::vector<float> protect(const UnitStore& u, const std::vector<float>& score, int sinks,
                                  int recent) {
    std::vector<float> key(score);
    const int n = u.size();
    for (int i = 0; i < n; ++i)
        if (u.pos(i) < sinks || i >= n - recent) key[size_t(i)] = kProtected;
    return key;
}

inline int recent_cap(int recent, int64_t keep) {
    return keep < 0 ? recent : int(std::min<int64_t>(recent, keep / 2));
}

// Stores every fp16 token of `u` at `bits` per token (eviction policies with bits < 16
// quantize what they keep as it is written).
inline void store_at(UnitStore& u, int bits) {
    if (bits >= 16) return;
    for (int i = u.size() - 1; i >= 0 && u.store(i) == Store::full; --i) u.set_bits(i, bits);
}

// The attention of the last `window` queries, summed per token position (dense over [0, T)).
class ObservationWindow {
  public:
    ObservationWindow(int64_t n_tokens, int window)
        : window_(std::max(1, window)), sum_(size_t(n_tokens), 0.0) {}
    // One query's attention (already reduced over the group's heads) over the held tokens.
    void add(const UnitStore& u, const float* p) {
        Row r;
        r.pos.assign(u.positions(), u.positions() + u.size());
        r.p.assign(p, p + u.size());
        for (size_t i = 0; i < r.pos.size(); ++i) sum_[size_t(r.pos[i])] += r.p[i];
        rows_.push_back(std::move(r));
        if (int(rows_.size()) > window_) {
            const Row& o = rows_.front();
            for (size_t i = 0; i < o.pos.size(); ++i) sum_[size_t(o.pos[i])] -= o.p[i];
            rows_.pop_front();
        }
    }
    int queries() const { return int(rows_.size()); }
    // The window's summed attention at position p (0 when no window query saw it).
    double sum_at(int64_t p) const { return std::max(0.0, sum_[size_t(p)]); }

  private:
    struct Row {
        std::vector<int32_t> pos;
        std::vector<float> p;
    };
    int window_;
    std::vector<double> sum_;
    std::deque<Row> rows_;
};

}  // namespace kvs::sim::detail
