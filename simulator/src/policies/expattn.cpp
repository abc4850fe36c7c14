// expattn: kvpress's ExpectedAttentionPress (NVIDIA/kvpress
// kvpress/presses/expected_attention_press.py): a key is scored by the attention the queries
// still to come are expected to give it. The prompt's queries are modelled as a Gaussian; its
// mean and covariance are rotated by RoPE averaged over the next n_future_positions positions,
// and E[exp(s q.k)] for q ~ N(mu, Sigma) = exp(s mu.k + s^2 k^T Sigma k / 2) gives each key's
// expected logit. The rule, line by line:
//   - statistics of the pre-RoPE queries of the prompt tokens [n_sink, P) of every query head
//     (get_query_statistics: hidden_states[:, n_sink:] through q_proj): mean mu and covariance
//     Sigma (divided by the count). kvscope's rows are post-RoPE: each is rotated back by its
//     own position (the run's RoPE frequencies: the trace's, or the model's live), which gives
//     q_proj's output exactly (q_proj's bias included: kvpress uses the weight alone);
//   - R = the mean over positions P .. P + n_future_positions - 1 of the RoPE rotation;
//     mu <- R mu, Sigma <- R Sigma R^T;
//   - score(key j) = softmax over the prompt's keys but the sinks of
//     (scale mu.k_j + scale^2 k_j^T Sigma k_j / 2) (kvpress: / sqrt(d) and / d / 2, the same
//     for scale = 1/sqrt(d); use_covariance=0 drops the second term), averaged over the query
//     heads of the KV head, then (use_vnorm=1) (score + epsilon) * ||v_j||;
//   - the n_sink first tokens get the maximum (kept).
// When: the prompt is compressed once, at P (prefill mode, kvpress's ScorerPress: the top
// `budget` prompt entries kept, token P with them; decoding adds its tokens), as keyscore.h.
// Keys and values are read as the store holds them. Stream mode is refused: the statistics are
// those of a whole prompt.
#include <cmath>

#include "common.h"
#include "engine/error.h"

namespace kvs::sim {

namespace {

struct ExpPlan {
    int64_t P = 0;
    // [slot][head]: the rotated mean (d) and covariance (d x d, row-major), or empty when the
    // prompt has no query past the sinks.
    std::vector<std::vector<std::vector<double>>> mu, cov;
};

struct ExpParams {
    int n_future = 512, n_sink = 4;
    bool use_cov = true, use_vnorm = true;
    double epsilon = 0;
};

// Rotates x (d) by angle sign * pos * f_i on each pair (RoPE as the engine applies it).
void rotate(double* x, int d, const RopeInfo& r, double pos, double sign) {
    const int half = d / 2;
    for (int i = 0; i < half; ++i) {
        const int a = r.half ? i : 2 * i, b = r.half ? i + half : 2 * i + 1;
        const double ang = sign * pos * double(r.inv_freq[size_t(i)]);
        const double c = std::cos(ang), s = std::sin(ang), x0 = x[a], x1 = x[b];
        x[a] = x0 * c - x1 * s;
        x[b] = x1 * c + x0 * s;
    }
}

class ExpAttnLayer final : public LayerPolicy {
  public:
    ExpAttnLayer(const Budget& b, const ExpParams& p, const LayerContext& c, const ExpPlan* plan)
        : budget_(b), p_(p), c_(c), plan_(plan), P_(c.prefill_len) {}
    bool observes() const override { return false; }
    int64_t budget_tokens(int64_t t, int) const override {
        return std::min<int64_t>(P_, budget_.tokens(P_)) + (t - P_ + 1);
    }
    void update(int64_t t, std::vector<UnitStore>& units) override {
        if (t != P_ || !plan_) return;
        const int64_t keep = budget_tokens(t, 0);
        const int d = c_.d, group = c_.n_head / c_.n_kv;
        const double s = double(c_.attn_scale);
        for (size_t g = 0; g < units.size(); ++g) {
            UnitStore& u = units[g];
            if (u.size() <= keep) continue;
            const int n = u.size() - 1;  // the newest entry (token P) is kept
            std::vector<float> key(size_t(u.size()), detail::kProtected);
            std::vector<int> scored;
            for (int i = 0; i < n; ++i)
                if (u.pos(i) >= p_.n_sink) scored.push_back(i);
            std::vector<double> mean(scored.size(), 0.0), logit(scored.size());
            std::vector<float> k(static_cast<size_t>(d)), v(static_cast<size_t>(d));
            int heads = 0;
            for (int h = int(g) * group; h < int(g + 1) * group; ++h) {
                const auto& mu = plan_->mu[size_t(c_.slot)][size_t(h)];
                const auto& cov = plan_->cov[size_t(c_.slot)][size_t(h)];
                if (mu.empty()) continue;
                ++heads;
                double mx = -INFINITY;
                for (size_t j = 0; j < scored.size(); ++j) {
                    u.k_row(scored[j], k.data());
                    double dot = 0, quad = 0;
                    for (int a = 0; a < d; ++a) dot += mu[size_t(a)] * double(k[size_t(a)]);
                    if (p_.use_cov)
                        for (int a = 0; a < d; ++a) {
                            double r = 0;
                            for (int b = 0; b < d; ++b)
                                r += cov[size_t(a) * size_t(d) + size_t(b)] * double(k[size_t(b)]);
                            quad += double(k[size_t(a)]) * r;
                        }
                    logit[j] = s * dot + s * s * quad / 2;
                    mx = std::max(mx, logit[j]);
                }
                double z = 0;
                for (size_t j = 0; j < scored.size(); ++j) z += std::exp(logit[j] - mx);
                for (size_t j = 0; j < scored.size(); ++j) mean[j] += std::exp(logit[j] - mx) / z;
            }
            for (size_t j = 0; j < scored.size(); ++j) {
                double sc = heads > 0 ? mean[j] / heads : 0.0;
                if (p_.use_vnorm) {
                    u.v_row(scored[j], v.data());
                    double nv = 0;
                    for (float x : v) nv += double(x) * double(x);
                    sc = (sc + p_.epsilon) * std::sqrt(nv);
                }
                key[size_t(scored[j])] = float(sc);
            }
            detail::evict_to(u, keep, key);
        }
    }

  private:
    Budget budget_;
    ExpParams p_;
    LayerContext c_;
    const ExpPlan* plan_;
    int64_t P_;
};

class ExpAttn final : public Policy {
  public:
    explicit ExpAttn(const Params& p) : budget_(p.budget()) {
        p_.n_future = p.integer("n_future_positions");
        p_.n_sink = p.integer("n_sink");
        p_.use_cov = p.integer("use_covariance") != 0;
        p_.use_vnorm = p.integer("use_vnorm") != 0;
        p_.epsilon = p.real("epsilon");
    }
    bool plans_from_rows() const override { return true; }
    bool plan_reads_all_queries() const override { return true; }
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext& c) const override {
        if (c.mode != Mode::prefill)
            fail(
                "policy 'expattn' compresses a prompt once from its queries' statistics: prefill "
                "mode only (--mode prefill)");
        return std::make_unique<ExpAttnLayer>(budget_, p_, c, static_cast<const ExpPlan*>(c.plan));
    }
    std::shared_ptr<const void> plan(const PlanContext& c) const override {
        KVS_ASSERT(c.read);
        auto out = std::make_shared<ExpPlan>();
        const int d = c.d;
        const int64_t P = c.prefill_len;
        out->P = P;
        if (int(c.rope.inv_freq.size()) != d / 2)
            fail("policy 'expattn' needs the run's RoPE frequencies ({} of them), got {}", d / 2,
                 c.rope.inv_freq.size());
        // The mean rotation over the future positions, per pair: cos and sin averaged.
        const int half = d / 2;
        std::vector<double> cbar(static_cast<size_t>(half), 0.0),
            sbar(static_cast<size_t>(half), 0.0);
        for (int i = 0; i < half; ++i) {
            for (int64_t pos = P; pos < P + p_.n_future; ++pos) {
                const double a = double(pos) * double(c.rope.inv_freq[size_t(i)]);
                cbar[size_t(i)] += std::cos(a);
                sbar[size_t(i)] += std::sin(a);
            }
            cbar[size_t(i)] /= double(p_.n_future);
            sbar[size_t(i)] /= double(p_.n_future);
        }
        // R as a d x d matrix (the same pairing as the rows).
        std::vector<double> R(size_t(d) * size_t(d), 0.0);
        for (int i = 0; i < half; ++i) {
            const int a = c.rope.half ? i : 2 * i, b = c.rope.half ? i + half : 2 * i + 1;
            R[size_t(a) * d + a] = cbar[size_t(i)];
            R[size_t(a) * d + b] = -sbar[size_t(i)];
            R[size_t(b) * d + b] = cbar[size_t(i)];
            R[size_t(b) * d + a] = sbar[size_t(i)];
        }
        const size_t L = c.layers.size();
        out->mu.assign(L, std::vector<std::vector<double>>(size_t(c.n_head)));
        out->cov = out->mu;
        const int64_t t0 = std::min<int64_t>(p_.n_sink, P);
        const int64_t N = P - t0;
        if (N <= 0) return out;
        std::vector<double> x(static_cast<size_t>(d));
        for (size_t s = 0; s < L; ++s)
            for (int h = 0; h < c.n_head; ++h) {
                const std::vector<float> q = c.read(PlanField::q, c.layers[s], h, t0, P);
                std::vector<double> mu(size_t(d), 0.0), cov(size_t(d) * size_t(d), 0.0);
                std::vector<double> rows(size_t(N) * size_t(d));
                for (int64_t t = 0; t < N; ++t) {
                    double* r = rows.data() + size_t(t) * size_t(d);
                    for (int a = 0; a < d; ++a) r[a] = double(q[size_t(t) * size_t(d) + size_t(a)]);
                    rotate(r, d, c.rope, double(t0 + t), -1.0);  // pre-RoPE
                    for (int a = 0; a < d; ++a) mu[size_t(a)] += r[a];
                }
                for (auto& m : mu) m /= double(N);
                if (p_.use_cov) {
                    for (int64_t t = 0; t < N; ++t) {
                        double* r = rows.data() + size_t(t) * size_t(d);
                        for (int a = 0; a < d; ++a) x[size_t(a)] = r[a] - mu[size_t(a)];
                        for (int a = 0; a < d; ++a)
                            for (int b = 0; b < d; ++b)
                                cov[size_t(a) * d + b] += x[size_t(a)] * x[size_t(b)];
                    }
                    for (auto& v : cov) v /= double(N);
                }
                // mu <- R mu; Sigma <- R Sigma R^T.
                std::vector<double> rmu(size_t(d), 0.0), tmp(size_t(d) * size_t(d), 0.0),
                    rc(size_t(d) * size_t(d), 0.0);
                for (int a = 0; a < d; ++a)
                    for (int b = 0; b < d; ++b)
                        rmu[size_t(a)] += R[size_t(a) * d + b] * mu[size_t(b)];
                if (p_.use_cov) {
                    for (int a = 0; a < d; ++a)
                        for (int b = 0; b < d; ++b) {
                            double acc = 0;
                            for (int e = 0; e < d; ++e)
                                acc += R[size_t(a) * d + e] * cov[size_t(e) * d + b];
                            tmp[size_t(a) * d + b] = acc;
                        }
                    for (int a = 0; a < d; ++a)
                        for (int b = 0; b < d; ++b) {
                            double acc = 0;
                            for (int e = 0; e < d; ++e)
                                acc += tmp[size_t(a) * d + e] * R[size_t(b) * d + e];
                            rc[size_t(a) * d + b] = acc;
                        }
                }
                out->mu[s][size_t(h)] = std::move(rmu);
                out->cov[s][size_t(h)] = std::move(rc);
            }
        return out;
    }

  private:
    Budget budget_;
    ExpParams p_;
};

}  // namespace

PolicyEntry policy_expattn() {
    PolicyEntry e;
    e.info.name = "expattn";
    e.info.summary =
        "kvpress ExpectedAttentionPress: keep the keys future queries are expected to attend "
        "(Gaussian queries, RoPE averaged over the next positions)";
    e.info.details =
        "Paper mode: prefill, and prefill only (kvpress compresses the prompt once; the query "
        "statistics are a whole prompt's). Per query head: mean and covariance of the pre-RoPE "
        "queries of prompt tokens [n_sink, P) (the post-RoPE rows rotated back by their "
        "positions with the run's RoPE frequencies); both rotated by RoPE averaged over positions "
        "P .. P + n_future_positions - 1; key j's expected logit scale mu.k + scale^2 k^T Sigma k "
        "/ 2 (use_covariance=0: the first term), softmax over the prompt's keys but the sinks, "
        "mean over the KV head's query heads, times ||v_j|| (use_vnorm=1, after adding epsilon); "
        "the first n_sink tokens kept. At P the top `budget` prompt entries are kept, token P "
        "with them; decoding adds its tokens (expected_attention_press.py, scorer_press.py). "
        "kvpress leaves q_proj's bias out of the mean; kvscope's rows include it.";
    e.info.params = {
        param_budget(),
        param_int("n_future_positions", "512", 1, 1e7,
                  "future positions the RoPE rotation is averaged over"),
        param_int("n_sink", "4", 0, 1e9, "first tokens kept and left out of the statistics"),
        param_int("use_covariance", "1", 0, 1, "1: the covariance term of the expected logit"),
        param_int("use_vnorm", "1", 0, 1, "1: scores times the value's L2 norm"),
        param_real("epsilon", "0", 0, 1e9, "added to the scores before the value norm")};
    e.info.paper_mode = Mode::prefill;
    e.info.needs_budget = e.info.takes_budget = true;
    e.make = [](const Params& p) { return std::make_unique<ExpAttn>(p); };
    return e;
}

}  // namespace kvs::sim
