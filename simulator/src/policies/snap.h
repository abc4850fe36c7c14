// The SnapKV selection shared by snapkv, pyramidkv, adakv and dynamickv.
//
// SnapKV (FasterDecoding/SnapKV, snapkv/monkeypatch/snapkv_utils.py:45-69; KVCache-Factory's
// GQA path pyramidkv/pyramidkv_utils.py:273-320): the last `window` queries' attention over the
// tokens before the window is summed over those queries (:55), pooled along positions with
// F.avg_pool1d / F.max_pool1d(kernel, padding=kernel//2, stride=1) (:56-59), and the top
// `capacity - window` tokens are kept with the window itself (:62-69). With GQA the query heads
// of a KV head are averaged before pooling (KVCache-Factory's gqa_score_agg='mean',
// pyramidkv_utils.py:252-270; gqa= changes it).
//
// kvscope's convention (docs/policies.md): at step t the driver has appended token t, which no
// query has attended yet. A selection at t scores the candidates = held tokens older than the
// window (position < t - w) with the attention of queries t-w .. t-1; the window (positions
// t-w .. t-1) and token t are always kept. Pooling runs over the candidates in held order only:
// it never reaches into the window or evicted positions; avg pooling zero-pads and divides by
// the kernel size (torch's avg_pool1d default count_include_pad=True), max pooling ignores the
// padding (max_pool1d pads with -inf).
//
//   prefill mode: one selection at P over the prompt [0, P): `capacity` = budget = the prompt
//                 entries kept (SnapKV's max_capacity_prompt, window included); the decoded
//                 tokens are added after it (the cache grows, as in the papers: no eviction
//                 during decoding). budget_tokens(t) = kept + (t - P + 1).
//   stream mode:  (kvscope's extension: the papers compress a prompt once) every `every` steps
//                 while over budget the selection is re-made with capacity = budget - 1, so the
//                 budget counts token t too; between selections the lowest-scored candidate
//                 makes room for each new token (tokens since the last selection's window are
//                 kept), so the budget holds at every step.
// Ties: the lower pooled score is evicted first; among equal scores the older token (held
// order). The reference tests/reference/snapkv.py uses the same rule.
#pragma once
#include <fmt/format.h>

#include <functional>

#include "common.h"
#include "engine/error.h"
#include "kernels/attend.h"

namespace kvs::sim::detail {

struct SnapParams {
    Budget budget;
    int window = 32, kernel = 5, every = 16, bits = 16;
    bool max_pool = false;
    GqaReduce gqa = GqaReduce::mean;
};

inline SnapParams snap_params(const Params& p, const std::string& name) {
    SnapParams s;
    s.budget = p.budget();
    const bool ws = !p.values.count("window");
    s.window = ws ? p.integer("ws") : p.integer("window");
    s.kernel = p.integer("kernel");
    s.every = p.integer("every");
    s.bits = p.integer("bits");
    s.max_pool = p.str("pool") == "max";
    s.gqa = p.gqa();
    if (s.kernel < 1 || s.kernel % 2 == 0)
        fail("policy '{}': parameter 'kernel' must be odd and >= 1 (got {})", name, s.kernel);
    if (s.budget.set && !s.budget.fraction && s.budget.value < s.window + 1)
        fail(
            "policy '{}': budget {} is below the window: budget must be >= {} + 1 = {} (the "
            "window plus at least one scored token; lower {}= or raise budget=)",
            name, s.budget.text, ws ? "ws" : "window", s.window + 1, ws ? "ws" : "window");
    return s;
}

inline std::vector<ParamDef> snap_param_defs(const std::string& kernel_def = "5",
                                             const std::string& pool_def = "avg") {
    return {param_budget("prefill mode: prompt entries kept per (layer, KV head), window included "
                         "(SnapKV's max_capacity_prompt); stream mode: entries held at every "
                         "step; a count (>= window + 1) or a fraction"),
            param_int("window", "32", 1, 1e6,
                      "observation window: the last queries that score, and the newest tokens "
                      "always kept"),
            param_int("kernel", kernel_def, 1, 1e6, "pooling width along positions (odd)"),
            param_choice("pool", pool_def, {"avg", "max"},
                         "pooling kind: avg (F.avg_pool1d, divides by the kernel) or max"),
            param_int("every", "16", 1, 1e9,
                      "stream mode: re-select at most every this many steps when over budget"),
            param_gqa(),
            param_bits(),
            param_group()};
}

// SnapKV's pooling of window sums `s` (candidates in held order), torch semantics.
inline std::vector<float> snap_pool(const std::vector<double>& s, int kernel, bool max_pool) {
    const int64_t n = int64_t(s.size()), half = kernel / 2;
    std::vector<float> out(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        double acc = max_pool ? -std::numeric_limits<double>::infinity() : 0.0;
        for (int64_t j = std::max<int64_t>(0, i - half); j <= std::min(n - 1, i + half); ++j)
            acc = max_pool ? std::max(acc, s[size_t(j)]) : acc + s[size_t(j)];
        out[size_t(i)] = float(max_pool ? acc : acc / double(kernel));
    }
    return out;
}

// Per-unit state of the SnapKV scorer: the window's attention rows.
class SnapUnit {
  public:
    SnapUnit(int64_t n_tokens, const SnapParams& p) : p_(p), ow_(n_tokens, p.window) {}
    // Pooled scores of the held tokens older than `cut` (the candidates, in held order); the
    // others get 0. Returns the number of candidates.
    int score(UnitStore& u, int64_t cut) {
        const int n = u.size();
        std::vector<double> s;
        int nc = 0;
        while (nc < n && u.pos(nc) < cut) ++nc;
        s.resize(size_t(nc));
        for (int i = 0; i < nc; ++i) s[size_t(i)] = ow_.sum_at(u.pos(i));
        const std::vector<float> pooled = snap_pool(s, p_.kernel, p_.max_pool);
        u.scores().assign(size_t(n), 0.0f);
        for (int i = 0; i < nc; ++i) u.scores()[size_t(i)] = pooled[size_t(i)];
        return nc;
    }
    void observe(const float* probs, int n_q, const UnitStore& u) {
        row_.resize(size_t(u.size()));
        reduce_gqa(probs, n_q, u.size(), p_.gqa, row_.data());
        ow_.add(u, row_.data());
    }

  private:
    SnapParams p_;
    ObservationWindow ow_;
    std::vector<float> row_;
};

// How many scored (non-window) tokens each KV head keeps at a selection: (capacity C, tokens
// before the new one n, the effective window w, each head's pooled candidate scores).
using SnapAlloc = std::function<std::vector<int64_t>(int64_t C, int64_t n, int64_t w,
                                                     const std::vector<std::vector<float>>& cand)>;

// A layer of SnapKV-style selection; `alloc` gives each head's scored capacity.
class SnapLayer final : public LayerPolicy {
  public:
    SnapLayer(const SnapParams& p, const LayerContext& c, SnapAlloc alloc)
        : p_(p),
          mode_(c.mode),
          P_(c.prefill_len),
          alloc_(std::move(alloc)),
          keep_(size_t(c.n_kv), -1) {
        for (int g = 0; g < c.n_kv; ++g) units_.emplace_back(c.n_tokens, p);
    }
    int64_t budget_tokens(int64_t t, int g) const override {
        const int64_t k = keep_[size_t(g)];
        if (k < 0) return -1;
        return mode_ == Mode::prefill ? k + (t - P_) : k;
    }
    void update(int64_t t, std::vector<UnitStore>& units) override {
        if (mode_ == Mode::prefill && t > P_) {  // compressed once at P; decoding adds tokens
            for (auto& u : units) store_at(u, p_.bits);
            return;
        }
        const int64_t C = mode_ == Mode::prefill
                              ? p_.budget.tokens(P_)
                              : std::max<int64_t>(1, p_.budget.tokens(t + 1) - 1);
        const int64_t w = std::min<int64_t>({int64_t(p_.window), C, t});
        const size_t G = units.size();
        bool over = false;
        for (size_t g = 0; g < G; ++g) over |= units[g].size() > (keep_[g] >= 0 ? keep_[g] : C + 1);
        if (mode_ == Mode::prefill && t == P_) over = t > C;
        const int64_t every = std::min<int64_t>(p_.every, std::max<int64_t>(1, C / 2));
        const bool due = last_sel_ < 0 || t - last_sel_ >= every;
        if (!over) {
            if (mode_ == Mode::prefill) std::fill(keep_.begin(), keep_.end(), t + 1);
            if (mode_ == Mode::stream && last_sel_ < 0)
                std::fill(keep_.begin(), keep_.end(), C + 1);
            for (auto& u : units) store_at(u, p_.bits);
            return;
        }
        std::vector<std::vector<float>> cand(G);
        if (due) {
            for (size_t g = 0; g < G; ++g) {
                const int nc = units_[g].score(units[g], t - w);
                cand[g].assign(units[g].scores().begin(), units[g].scores().begin() + nc);
            }
            const std::vector<int64_t> caps = alloc_(C, t, w, cand);
            for (size_t g = 0; g < G; ++g) keep_[g] = caps[g] + w + 1;
            last_sel_ = t;
            last_w_ = w;
        } else if (!per_head_) {
            const std::vector<int64_t> caps = alloc_(C, t, w, cand);
            for (size_t g = 0; g < G; ++g) keep_[g] = caps[g] + w + 1;
        }
        for (size_t g = 0; g < G; ++g) {
            UnitStore& u = units[g];
            std::vector<float> key = u.scores();
            key.resize(size_t(u.size()), 0.0f);
            // The window, token t, and (between selections) what came after the last
            // selection's candidates are kept.
            const int64_t cut = std::min<int64_t>(t - w, last_sel_ - last_w_);
            for (int i = 0; i < u.size(); ++i)
                if (u.pos(i) >= cut) key[size_t(i)] = kProtected;
            evict_to(u, keep_[g], key);
            store_at(u, p_.bits);
        }
    }
    void observe(int64_t, int g, const float* probs, int n_q, UnitStore& u) override {
        units_[size_t(g)].observe(probs, n_q, u);
    }
    int64_t first_observed_step(int64_t first_update) const override {
        return std::max<int64_t>(0, first_update - p_.window);
    }
    // Per-head capacities depend on the scores (adakv): kept from one selection to the next.
    void set_per_head(bool on) { per_head_ = on; }

  private:
    SnapParams p_;
    Mode mode_;
    int64_t P_;
    SnapAlloc alloc_;
    std::vector<int64_t> keep_;
    std::vector<SnapUnit> units_;
    int64_t last_sel_ = -1, last_w_ = 0;
    bool per_head_ = false;
};

// --- Plans from rows (dynamickv, composite): per-layer budgets from one look at every layer ---

// The step a plan looks at: P in prefill mode; in stream mode twice the first step where the
// cache exceeds the budget (at that first step every layer has exactly its budget of candidates,
// so any allocation would come out uniform; at twice it the window ranks about twice the
// budget). -1 when the cache never exceeds the budget (the plan is then uniform).
inline int64_t plan_step(const PlanContext& c, const Budget& b) {
    const int64_t t0 = first_plan_step(c, b);
    if (t0 < 0) return -1;
    return c.mode == Mode::stream ? std::min<int64_t>(c.n_tokens - 1, 2 * t0) : t0;
}

// SnapKV's capacity C at the plan step t0: the prompt entries kept (prefill), budget - 1 (stream).
inline int64_t plan_capacity(const PlanContext& c, const Budget& b, int64_t t0) {
    return c.mode == Mode::prefill ? b.tokens(t0) : std::max<int64_t>(1, b.tokens(t0 + 1) - 1);
}

// The candidates' scores of KV head g of model layer `layer` at the plan step t0, as SnapUnit
// gives them at a selection there: the attention of queries t0 - ws .. t0 - 1 over keys [0, t0)
// (full attention: nothing is evicted yet), by the one attention routine, reduced over the
// group's query heads (p.gqa) per query, summed over the queries, pooled over the candidates
// [0, t0 - ws) only.
inline std::vector<float> plan_scores(const PlanContext& c, const SnapParams& p, int layer, int g,
                                      int64_t t0, int ws) {
    const int d = c.d;
    const std::vector<float> k = c.read(PlanField::k, layer, g, 0, t0);
    std::vector<int32_t> kpos(static_cast<size_t>(t0)), qpos(static_cast<size_t>(ws));
    for (int64_t j = 0; j < t0; ++j) kpos[size_t(j)] = int32_t(j);
    for (int i = 0; i < ws; ++i) qpos[size_t(i)] = int32_t(t0 - ws + i);
    std::vector<int> heads;
    for (int h = 0; h < c.n_head; ++h)
        if (c.kv_of_q[size_t(h)] == g) heads.push_back(h);
    const int nq = int(heads.size());
    // probs[h][i * t0 + j]: query head h's (i-th window query) attention to key j.
    std::vector<float> p_all(size_t(nq) * size_t(ws) * size_t(t0)), lse(static_cast<size_t>(ws));
    for (int a = 0; a < nq; ++a) {
        const std::vector<float> q = c.read(PlanField::q, layer, heads[size_t(a)], t0 - ws, t0);
        KVS_ASSERT(kernels::attend_cpu(q.data(), qpos.data(), ws, k.data(), nullptr, kpos.data(),
                                       nullptr, int(t0), d, c.attn_scale, nullptr, lse.data(),
                                       p_all.data() + size_t(a) * size_t(ws) * size_t(t0)) ==
                   kernels::Status::ok);
    }
    std::vector<double> sum(size_t(t0 - ws), 0.0);
    std::vector<float> rows(size_t(nq) * size_t(t0)), red(static_cast<size_t>(t0));
    for (int i = 0; i < ws; ++i) {
        for (int a = 0; a < nq; ++a)
            std::copy_n(p_all.data() + (size_t(a) * size_t(ws) + size_t(i)) * size_t(t0), t0,
                        rows.data() + size_t(a) * size_t(t0));
        reduce_gqa(rows.data(), nq, int(t0), p.gqa, red.data());
        for (int64_t j = 0; j < t0 - ws; ++j) sum[size_t(j)] += double(red[size_t(j)]);
    }
    return snap_pool(sum, p.kernel, p.max_pool);
}

// Every head keeps C - w scored tokens (snapkv).
inline SnapAlloc uniform_alloc() {
    return [](int64_t C, int64_t, int64_t w, const std::vector<std::vector<float>>& cand) {
        return std::vector<int64_t>(cand.size(), std::max<int64_t>(0, C - w));
    };
}

}  // namespace kvs::sim::detail
