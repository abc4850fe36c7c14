// agacc: Attention-Guided Adaptive KV Cache Compression (seed 001).
//   I_i <- alpha * S_i + (1 - alpha) * I_i          S_i: the current query's attention
//   Î_i = I_i / P(t - i),  P(x) = (1 + x)^(-pos_beta)   (position-aware normalisation)
//   r_i = Î_i / mean(Î) over the held tokens outside the newest `recent`; blocks of `block`
//   consecutive positions share the max r of their held tokens (block-based processing).
//   Tiers (every k steps): r > tau_h: fp16; tau_l < r <= tau_h: b_min + floor((r - r_min) *
//   (b_max - b_min) / (r_max - r_min)) bits; tau_e <= r <= tau_l: b_min bits and magnitude
//   pruning of p_max * (1 - r / tau_l) of each K/V row, stored sparse when smaller; r < tau_e:
//   evicted. Every `nr` steps a re-evaluation may also raise a token's precision (restored from
//   an offloaded full-precision copy; counted). With budget=, the lowest-r tokens are evicted
//   whenever the cache is over budget.
#include <fmt/format.h>

#include "common.h"
#include "engine/error.h"
#include "kernels/quant_pack.h"

namespace kvs::sim {

namespace {

struct AgaccParams {
    Budget budget;
    double alpha = 0.2, pos_beta = 0.5, tau_h = 2.0, tau_l = 0.5, tau_e = 0.05, p_max = 0.5;
    int b_min = 2, b_max = 8, block = 16, k = 16, nr = 128, nw = 32, recent = 32;
    GqaReduce gqa = GqaReduce::mean;
    UnitStore::Quantizer quantizer = UnitStore::Quantizer::zscore;
    double s = 1.0;       // the z-score quantizer's outlier scale
    bool global = false;  // scope=global: the seed's cross-layer score (replay only)
};

// scope=global: the seed's S_i (2.2) with N_q = 1: for every step t, query t's attention to each
// token i <= t averaged over every layer of the trace and every query head, from the trace's full
// attention (what the uncompressed model computed). Row t holds t + 1 values at t (t + 1) / 2:
// T (T + 1) / 2 floats in all (8.4 MB at 2,048 tokens, 134 MB at 8,192).
struct GlobalRows {
    std::vector<float> v;
    const float* row(int64_t t) const { return v.data() + size_t(t) * size_t(t + 1) / 2; }
};

std::shared_ptr<const GlobalRows> global_rows(const PlanContext& c) {
    auto g = std::make_shared<GlobalRows>();
    const int64_t T = c.n_tokens;
    g->v.assign(size_t(T) * size_t(T + 1) / 2, 0.0f);
    const float w = 1.0f / float(c.layers.size() * size_t(c.n_head));
    for (int layer : c.layers)
        for (int h = 0; h < c.n_head; ++h)
            detail::plan_attention_rows(c, layer, h, T, [&](int64_t t, const float* p) {
                float* dst = g->v.data() + size_t(t) * size_t(t + 1) / 2;
                for (int64_t j = 0; j <= t; ++j) dst[j] += w * p[j];
            });
    return g;
}

class AgaccLayer final : public LayerPolicy {
  public:
    AgaccLayer(const AgaccParams& p, int64_t n_tokens, int n_kv, const GlobalRows* global)
        : p_(p), global_(global) {
        for (int g = 0; g < n_kv; ++g) win_.emplace_back(n_tokens, p.nw);
    }
    bool offloads() const override { return true; }
    int64_t budget_tokens(int64_t t, int) const override { return p_.budget.tokens(t + 1); }
    void update(int64_t t, std::vector<UnitStore>& units) override {
        // Tiers every k steps; re-evaluation every nr steps, independently (seed 001, 2.6).
        const bool due = last_ < 0 || t - last_ >= p_.k;
        const bool reeval = t > 0 && t % p_.nr == 0;
        if (due) last_ = t;
        for (size_t g = 0; g < units.size(); ++g) {
            UnitStore& u = units[g];
            u.set_quantizer(p_.quantizer, float(p_.s));
            if (reeval) {
                // Re-evaluation: the importance is recalculated from the most recent nw
                // attention rows (their mean over the queries that saw the token).
                const int nq = std::max(1, win_[g].queries());
                for (int i = 0; i < u.size(); ++i)
                    u.scores()[size_t(i)] = float(win_[g].sum_at(u.pos(i)) / nq);
            }
            if (!due && !reeval && !(p_.budget.set && u.size() > p_.budget.tokens(t + 1))) continue;
            std::vector<float> r = relative(t, u);
            if (p_.budget.set)
                detail::evict_to(
                    u, p_.budget.tokens(t + 1),
                    detail::protect(u, r, 0,
                                    detail::recent_cap(p_.recent, p_.budget.tokens(t + 1))));
            if (!due && !reeval) continue;
            r = relative(t, u);
            const int old = u.size() - p_.recent;
            if (old <= 0) continue;
            // Eviction tier first (indices shift), then the bits of the rest.
            std::vector<uint8_t> drop(size_t(u.size()), 0);
            bool any = false;
            for (int i = 0; i < old; ++i)
                if (r[size_t(i)] < p_.tau_e) drop[size_t(i)] = 1, any = true;
            if (any) {
                std::vector<float> keep_r;
                for (size_t i = 0; i < drop.size(); ++i)
                    if (!drop[i]) keep_r.push_back(r[i]);
                u.evict_mask(drop);
                r = keep_r;
            }
            const int old2 = u.size() - p_.recent;
            float rmin = std::numeric_limits<float>::infinity(), rmax = 0;
            for (int i = 0; i < old2; ++i) {
                rmin = std::min(rmin, r[size_t(i)]);
                rmax = std::max(rmax, r[size_t(i)]);
            }
            for (int i = 0; i < old2; ++i) {
                const double ri = r[size_t(i)];
                if (ri > p_.tau_h) {
                    if (u.bits(i) < 16 && reeval) u.set_bits(i, 16);
                } else if (ri > p_.tau_l) {
                    const double f = rmax > rmin ? (ri - rmin) / (rmax - rmin) : 1.0;
                    const int b = kvs::kernels::snap_bits(
                        p_.b_min + int(std::floor(f * (p_.b_max - p_.b_min))));
                    const bool sparse = u.store(i) == Store::sparse;
                    if (b < u.bits(i) || (reeval && (b > u.bits(i) || sparse))) u.set_bits(i, b);
                } else {
                    const double p = p_.p_max * (1.0 - std::min(1.0, ri / p_.tau_l));
                    if (u.store(i) != Store::sparse || reeval)
                        u.prune(i, p, std::min(u.bits(i), kvs::kernels::snap_bits(p_.b_min)));
                }
            }
        }
    }
    void observe(int64_t t, int g, const float* probs, int n_q, UnitStore& u) override {
        row_.resize(size_t(u.size()));
        if (global_) {
            // The cross-layer score of each held token (the same in every unit).
            const float* r = global_->row(t);
            for (int i = 0; i < u.size(); ++i) row_[size_t(i)] = r[u.pos(i)];
        } else {
            reduce_gqa(probs, n_q, u.size(), p_.gqa, row_.data());
        }
        win_[size_t(g)].add(u, row_.data());
        auto& s = u.scores();
        const float a = float(p_.alpha);
        for (int i = 0; i < u.size(); ++i)
            s[size_t(i)] = a * row_[size_t(i)] + (1 - a) * s[size_t(i)];
    }

  private:
    // r_i per held token: position-normalised importance over its mean, block max.
    std::vector<float> relative(int64_t t, const UnitStore& u) const {
        const int n = u.size();
        std::vector<float> r(static_cast<size_t>(n));
        double sum = 0;
        int cnt = 0;
        for (int i = 0; i < n; ++i) {
            const double dist = double(t - u.pos(i));
            r[size_t(i)] = float(u.scores()[size_t(i)] * std::pow(1.0 + dist, p_.pos_beta));
            if (i < n - p_.recent) sum += r[size_t(i)], ++cnt;
        }
        const double mean = cnt > 0 ? sum / cnt : 0;
        for (auto& x : r) x = mean > 0 ? float(x / mean) : 1.0f;
        // Block max over held tokens of the same block.
        int i = 0;
        while (i < n) {
            const int64_t b = u.pos(i) / p_.block;
            int j = i;
            float m = 0;
            while (j < n && u.pos(j) / p_.block == b) m = std::max(m, r[size_t(j++)]);
            for (int q = i; q < j; ++q) r[size_t(q)] = m;
            i = j;
        }
        return r;
    }
    AgaccParams p_;
    const GlobalRows* global_;
    int64_t last_ = -1;
    std::vector<detail::ObservationWindow> win_;
    std::vector<float> row_;
};

class Agacc final : public Policy {
  public:
    explicit Agacc(const Params& p) {
        p_.budget = p.budget();
        p_.alpha = p.real("alpha");
        p_.pos_beta = p.real("pos_beta");
        p_.tau_h = p.real("tau_h");
        p_.tau_l = p.real("tau_l");
        p_.tau_e = p.real("tau_e");
        p_.p_max = p.real("p_max");
        p_.b_min = p.integer("b_min");
        p_.b_max = p.integer("b_max");
        p_.block = p.integer("block");
        p_.k = p.integer("k");
        p_.nr = p.integer("nr");
        p_.nw = p.integer("nw");
        p_.recent = p.integer("recent");
        p_.gqa = p.gqa();
        p_.quantizer = p.str("quantizer") == "minmax" ? UnitStore::Quantizer::minmax
                                                      : UnitStore::Quantizer::zscore;
        p_.s = p.real("s");
        p_.global = p.str("scope") == "global";
        if (!(p_.tau_e <= p_.tau_l && p_.tau_l <= p_.tau_h))
            fail("policy 'agacc': needs tau_e <= tau_l <= tau_h (got {}, {}, {})", p_.tau_e,
                 p_.tau_l, p_.tau_h);
        if (p_.b_min > p_.b_max)
            fail("policy 'agacc': b_min={} is larger than b_max={}", p_.b_min, p_.b_max);
    }
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext& c) const override {
        return std::make_unique<AgaccLayer>(p_, c.n_tokens, c.n_kv,
                                            static_cast<const GlobalRows*>(c.plan));
    }
    bool plans_from_rows() const override { return p_.global; }
    std::shared_ptr<const void> plan(const PlanContext& c) const override {
        if (!p_.global) return nullptr;
        KVS_ASSERT(c.read && c.reader);  // live refuses scope=global (live_refusal)
        return global_rows(c);
    }
    std::string live_refusal() const override {
        if (!p_.global) return "";
        return "agacc scope=global (the seed's cross-layer score) runs in replay only: every "
               "decision needs each layer's attention to the token, which a live run has only "
               "after its last layer (live: scope=unit)";
    }

  private:
    AgaccParams p_;
};

}  // namespace

PolicyEntry policy_agacc() {
    PolicyEntry e;
    e.info.name = "agacc";
    e.info.summary =
        "seed 001: EMA importance, position-normalised; fp16 / fewer bits / pruned / "
        "evicted by thresholds";
    e.info.details =
        "I_i <- alpha*S_i + (1-alpha)*I_i (S_i: the current query's attention, combined over the "
        "group's heads; the seed's average over all layers and heads is replaced by per-(layer, "
        "KV head) decisions, as every kvscope policy decides per unit). Î_i = I_i * (1 + t - "
        "i)^pos_beta (dividing by P(x) = (1+x)^-pos_beta). Thresholds are relative: r_i = Î_i / "
        "mean(Î) over the held tokens outside the newest `recent`, then the max over each "
        "block of `block` positions. Every k steps: r > tau_h: fp16; tau_l < r <= tau_h: b_min + "
        "floor((r - r_min)(b_max - b_min)/(r_max - r_min)) bits (snapped to 2/4/8/16), coded by "
        "the seed's mean/std rule round((x - mu)/sigma * h/s) * s*sigma/h + mu (h = 2^(b-1) - "
        "1; mu, sigma per group of `group` channels of a token; values beyond s*sigma clipped), "
        "stored in the per-token packed format with its real bytes (fp16 step and offset per "
        "group + b-bit codes: the same bytes as min/max groups; quantizer=minmax uses those); "
        "tau_e <= r <= "
        "tau_l: b_min bits and the p_max*(1 - r/tau_l) smallest-magnitude elements of each K/V "
        "row zeroed, stored sparse (values packed + a bitmask or 1-byte indices, whichever is "
        "smaller) when that is smaller than dense; r < tau_e: evicted (no marker tokens are "
        "stored: keys carry RoPE, positions need no markers). Between re-evaluations "
        "(every nr steps) precision only goes down; a re-evaluation restores tokens whose tier "
        "rose from an offloaded full-precision copy (counted as restores); the re-evaluation "
        "replaces I_i by the mean attention of the last nw queries (seed 001, 2.6), k and nr "
        "are independent periods (old kvscope: lcm(k, nr), no nw). budget= adds eviction "
        "of the lowest r whenever the cache is over budget. Prefill mode: the prompt's queries "
        "build I before the first update at P. Paper mode: stream. scope=global is the seed's S_i "
        "(2.2): the current query's attention averaged over all layers and heads, taken from the "
        "trace's full attention (a plan pass; replay only, refused live); the default scope=unit "
        "uses each (layer, KV head)'s own attention over what it holds, which runs in both "
        "drivers. N_q = 1 (the EMA over steps does the averaging over queries). Not reproduced: "
        "its span-marker tokens (need trained embeddings). The seed gives "
        "no value of s: 1 is near the mean-squared-error optimum of the 3 levels of 2 bits for "
        "Gaussian data (1.2), the tier most lowered tokens land in at b_min=2; larger s clip "
        "fewer outliers with coarser steps (docs/policies.md has the measured effect).";
    e.info.params = {
        param_budget("optional: tokens held per (layer, KV head), a count or a fraction"),
        param_real("alpha", "0.2", 0, 1, "EMA weight of the current attention"),
        param_real("pos_beta", "0.5", 0, 10, "position normalisation exponent"),
        param_real("tau_h", "2", 0, 1e9, "above: fp16 (relative to the mean importance)"),
        param_real("tau_l", "0.5", 0, 1e9, "below: b_min bits + pruning"),
        param_real("tau_e", "0.05", 0, 1e9, "below: evicted"),
        param_int("b_min", "2", 2, 16, "fewest bits"),
        param_int("b_max", "8", 2, 16, "most bits of the medium tier"),
        param_real("p_max", "0.5", 0, 1, "largest pruned share of a row"),
        param_int("block", "16", 1, 1e6, "positions per importance block"),
        param_int("k", "16", 1, 1e9, "apply the tiers every k steps"),
        param_int("nr", "128", 1, 1e9,
                  "re-evaluate every nr steps (independent of k): importance from the last nw "
                  "attention rows, precision may rise"),
        param_int("nw", "32", 1, 1e9, "re-evaluation window: the most recent attention rows"),
        param_int("recent", "32", 0, 1e9,
                  "newest tokens kept fp16, never evicted (at most half the budget)"),
        param_choice("quantizer", "zscore", {"zscore", "minmax"},
                     "codes of the lowered widths: zscore (the seed's mean/std rule) or minmax "
                     "(min/max groups, kvscope's earlier rule); the same bytes"),
        param_real("s", "1", 0.01, 1e3,
                   "zscore: outlier scale (values beyond s standard deviations are clipped)"),
        param_choice("scope", "unit", {"unit", "global"},
                     "unit: S_i from the (layer, KV head)'s own attention over what it holds; "
                     "global: the seed's score, the mean over every layer and query head of the "
                     "trace's full attention (replay only)"),
        param_gqa(),
        param_group()};
    e.info.takes_budget = true;
    e.make = [](const Params& p) { return std::make_unique<Agacc>(p); };
    return e;
}

}  // namespace kvs::sim
