// cam (CaM, "Cache Merging for Memory-efficient LLMs Inference", Zhang et al., ICML 2024): an
// eviction policy whose evicted tokens are not simply dropped: each one's value is, with a
// probability set by how much attention it received, spread over the values of the entries that
// follow it, so that the output loses less of it. Keys are unchanged.
//
// kvscope's rule (the paper's, with the choices where it is open written out):
//   eviction: base=window (StreamingLLM: `sinks` first tokens plus the newest; the paper's main
//             setting) or base=h2o (heavy hitters by accumulated attention plus the newest
//             (budget - 1) / 2, as h2o.cpp). The budget counts the newest token.
//   merge:    for each evicted entry e (oldest first), its recipients R are the first m held
//             entries after it that stay (m = merge_window, default 32: the official code's
//             merge_budget). With a(i) the attention the latest query gave entry i (query heads of
//             the KV head combined with gqa=): p = min(1, a(e) / mean a(S)), S = every entry
//             that stays and has been attended (the new token has not), as the official code
//             divides by the mean over the sinks and the recent window (0 when that mean is 0).
//             A Bernoulli draw with probability p, from a hash of (seed, layer, KV head,
//             position) so that replay and the live engine draw the same, decides; when it
//             merges, v_r += v_e / |R| for every r in R (|R| < m near the newest token: the
//             value's whole mass still goes in; the official code divides by m).
// The recipients' rows are re-stored at full precision (what a real cache writes back). For recall
// an evicted token counts as evicted even when its value was merged: it is spread over several
// entries, none of which stands for it (docs/policies.md); compare CaM by output error / KL.
#include <fmt/format.h>

#include <algorithm>

#include "common.h"
#include "engine/error.h"

namespace kvs::sim {

namespace {

enum class Base { window, h2o };

// A uniform draw in [0, 1) from (seed, layer, KV head, position): splitmix64's finalizer.
double draw(uint64_t seed, int layer, int g, int32_t pos) {
    uint64_t x = seed ^ (uint64_t(uint32_t(layer)) << 40) ^ (uint64_t(uint32_t(g)) << 32) ^
                 uint64_t(uint32_t(pos));
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
    return double(x >> 11) * 0x1.0p-53;
}

class CamLayer final : public LayerPolicy {
  public:
    CamLayer(Budget b, Base base, int sinks, int merge_window, uint64_t seed, GqaReduce gqa,
             int layer)
        : budget_(b),
          base_(base),
          sinks_(sinks),
          m_(merge_window),
          seed_(seed),
          gqa_(gqa),
          layer_(layer) {}
    int64_t budget_tokens(int64_t t, int) const override { return budget_.tokens(t + 1); }
    void observe(int64_t, int g, const float* probs, int n_q, UnitStore& u) override {
        if (last_.size() <= size_t(g)) last_.resize(size_t(g) + 1);
        Last& l = last_[size_t(g)];
        l.a.resize(size_t(u.size()));
        reduce_gqa(probs, n_q, u.size(), gqa_, l.a.data());
        l.pos.assign(u.positions(), u.positions() + u.size());
        auto& s = u.scores();
        for (int i = 0; i < u.size(); ++i) s[size_t(i)] += l.a[size_t(i)];
    }
    void update(int64_t t, std::vector<UnitStore>& units) override {
        const int64_t keep = budget_tokens(t, 0);
        for (size_t g = 0; g < units.size(); ++g) {
            UnitStore& u = units[g];
            if (u.size() <= keep) continue;
            std::vector<float> key;
            if (base_ == Base::window) {
                key.assign(size_t(u.size()), 0.0f);
                for (int i = 0; i < u.size(); ++i)
                    if (u.pos(i) < sinks_) key[size_t(i)] = detail::kProtected;
            } else {
                const int64_t C = std::max<int64_t>(0, keep - 1);
                key = detail::protect(u, u.scores(), 0, int(C / 2 + 1));
            }
            const std::vector<uint8_t> drop = detail::drop_set(u, keep, key);
            merge_evicted(u, int(g), drop);
            u.evict_mask(drop);
        }
    }

  private:
    void merge_evicted(UnitStore& u, int g, const std::vector<uint8_t>& drop) {
        const int n = u.size(), d = u.d();
        // a(i): the latest query's attention to entry i (-1: not attended, the new token).
        std::vector<float> A(size_t(n), -1.0f);
        if (size_t(g) < last_.size()) {
            const Last& l = last_[size_t(g)];
            for (int i = 0; i < n; ++i) {
                const auto it = std::lower_bound(l.pos.begin(), l.pos.end(), u.pos(i));
                if (it != l.pos.end() && *it == u.pos(i))
                    A[size_t(i)] = l.a[size_t(it - l.pos.begin())];
            }
        }
        // What the merges add to each recipient's value (sized at the first merge: most updates
        // of a stream run merge nothing).
        std::vector<float> add, ve(static_cast<size_t>(d));
        std::vector<uint8_t> touched(size_t(n), 0);
        double mean = 0;
        int ns = 0;
        for (int i = 0; i < n; ++i)
            if (!drop[size_t(i)] && A[size_t(i)] >= 0) mean += double(A[size_t(i)]), ++ns;
        if (ns > 0) mean /= double(ns);
        std::vector<int> R;
        for (int e = 0; e < n; ++e) {
            if (!drop[size_t(e)] || A[size_t(e)] < 0) continue;
            R.clear();
            for (int i = e + 1; i < n && int(R.size()) < m_; ++i)
                if (!drop[size_t(i)]) R.push_back(i);
            if (R.empty()) continue;
            const double p = mean > 0 ? std::min(1.0, double(A[size_t(e)]) / mean) : 0.0;
            if (!(draw(seed_, layer_, g, u.pos(e)) < p)) continue;
            u.v_row(e, ve.data());
            add.resize(size_t(n) * size_t(d), 0.0f);
            const float w = 1.0f / float(R.size());
            for (int r : R) {
                float* a = add.data() + size_t(r) * size_t(d);
                for (int c = 0; c < d; ++c) a[c] += ve[size_t(c)] * w;
                touched[size_t(r)] = 1;
            }
        }
        std::vector<float> k(static_cast<size_t>(d)), v(static_cast<size_t>(d));
        const std::vector<uint8_t> none(size_t(n), 0);
        for (int r = 0; r < n; ++r) {
            if (!touched[size_t(r)]) continue;
            u.k_row(r, k.data());
            u.v_row(r, v.data());
            const float* a = add.data() + size_t(r) * size_t(d);
            for (int c = 0; c < d; ++c) v[size_t(c)] += a[c];
            u.merge(r, k.data(), v.data(), u.count(r), none);
        }
    }

    Budget budget_;
    Base base_;
    int sinks_, m_;
    uint64_t seed_;
    GqaReduce gqa_;
    int layer_;
    struct Last {  // per KV head: the latest query's attention and the positions it covered
        std::vector<float> a;
        std::vector<int32_t> pos;
    };
    std::vector<Last> last_;
};

class Cam final : public Policy {
  public:
    explicit Cam(const Params& p)
        : budget_(p.budget()),
          base_(p.str("base") == "h2o" ? Base::h2o : Base::window),
          sinks_(base_ == Base::window ? p.integer("sinks") : 0),
          m_(p.integer("merge_window")),
          seed_(uint64_t(p.integer("seed"))),
          gqa_(p.gqa()) {
        if (base_ == Base::window && !budget_.fraction && budget_.value <= sinks_)
            fail("policy 'cam': budget {} must be larger than sinks={}", budget_.text, sinks_);
    }
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext& c) const override {
        return std::make_unique<CamLayer>(budget_, base_, sinks_, m_, seed_, gqa_, c.layer);
    }

  private:
    Budget budget_;
    Base base_;
    int sinks_, m_;
    uint64_t seed_;
    GqaReduce gqa_;
};

}  // namespace

PolicyEntry policy_cam() {
    PolicyEntry e;
    e.info.name = "cam";
    e.info.summary =
        "CaM: evict (StreamingLLM or H2O) but merge an evicted token's value into the entries "
        "after it, with a probability set by its attention";
    e.info.details =
        "Paper mode: stream (Zhang et al., ICML 2024). Eviction by base=window (sinks + newest) "
        "or base=h2o (accumulated attention, newest (budget - 1) / 2 kept). Each evicted entry "
        "e (oldest first): recipients R = the next merge_window entries that stay (the official "
        "merge_budget, 32); p = min(1, a(e) / mean a(S)), a = the latest query's attention, S = "
        "the staying attended entries (the official code: the sinks and the recent window); a "
        "Bernoulli draw seeded by (seed, layer, KV head, position), the same in replay and live, "
        "decides; a merge adds v_e / |R| to every recipient's value (keys unchanged; recipients "
        "re-stored at full precision). Recall counts the evicted "
        "token as evicted (its value is spread, no entry stands for it).";
    e.info.params = {param_budget(),
                     param_choice("base", "window", {"window", "h2o"},
                                  "eviction: StreamingLLM window or H2O heavy hitters"),
                     param_int("sinks", "4", 0, 1e9, "base=window: attention-sink tokens kept"),
                     param_int("merge_window", "32", 1, 1e9,
                               "entries after an evicted one its value is spread over"),
                     param_int("seed", "0", 0, 2147483647, "seed of the merge draws"),
                     param_gqa()};
    e.info.needs_budget = e.info.takes_budget = true;
    e.make = [](const Params& p) { return std::make_unique<Cam>(p); };
    return e;
}

}  // namespace kvs::sim
