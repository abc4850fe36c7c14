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
#include <Eigen/Dense>
#include <cmath>

#include "common.h"
#include "engine/error.h"

namespace kvs::sim {

namespace {

struct ExpPlan {
    // [slot][head]: the rotated mean (d) and covariance (d x d), or empty when the prompt has no
    // query past the sinks.
    std::vector<std::vector<Eigen::VectorXd>> mu;
    std::vector<std::vector<Eigen::MatrixXd>> cov;
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
        std::vector<float> row(static_cast<size_t>(d));
        for (size_t g = 0; g < units.size(); ++g) {
            UnitStore& u = units[g];
            if (u.size() <= keep) continue;
            const int n = u.size() - 1;  // the newest entry (token P) is kept
            std::vector<float> key(size_t(u.size()), detail::kProtected);
            std::vector<int> scored;
            for (int i = 0; i < n; ++i)
                if (u.pos(i) >= p_.n_sink) scored.push_back(i);
            // The scored keys as stored, one row each, read once for the group's heads.
            const Eigen::Index m = Eigen::Index(scored.size());
            Eigen::MatrixXd K(m, d);
            for (Eigen::Index j = 0; j < m; ++j) {
                u.k_row(scored[size_t(j)], row.data());
                for (int a = 0; a < d; ++a) K(j, a) = double(row[size_t(a)]);
            }
            Eigen::VectorXd mean = Eigen::VectorXd::Zero(m);
            int heads = 0;
            for (int h = int(g) * group; h < int(g + 1) * group; ++h) {
                const Eigen::VectorXd& mu = plan_->mu[size_t(c_.slot)][size_t(h)];
                if (mu.size() == 0) continue;
                ++heads;
                // Expected logits: s mu.k + s^2 k^T Sigma k / 2, then their softmax.
                Eigen::VectorXd logit = s * (K * mu);
                if (p_.use_cov) {
                    const Eigen::MatrixXd& cov = plan_->cov[size_t(c_.slot)][size_t(h)];
                    logit += (s * s / 2) * (K * cov).cwiseProduct(K).rowwise().sum();
                }
                const Eigen::VectorXd e = (logit.array() - logit.maxCoeff()).exp().matrix();
                mean += e / e.sum();
            }
            for (Eigen::Index j = 0; j < m; ++j) {
                double sc = heads > 0 ? mean(j) / heads : 0.0;
                if (p_.use_vnorm) {
                    u.v_row(scored[size_t(j)], row.data());
                    double nv = 0;
                    for (float x : row) nv += double(x) * double(x);
                    sc = (sc + p_.epsilon) * std::sqrt(nv);
                }
                key[size_t(scored[size_t(j)])] = float(sc);
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
        const int d = c.d, half = d / 2;
        const int64_t P = c.prefill_len;
        if (int(c.rope.inv_freq.size()) != half)
            fail("policy 'expattn' needs the run's RoPE frequencies ({} of them), got {}", half,
                 c.rope.inv_freq.size());
        // R: the RoPE rotation averaged over the future positions (per pair: cos and sin
        // averaged), in the rows' pairing.
        Eigen::MatrixXd R = Eigen::MatrixXd::Zero(d, d);
        for (int i = 0; i < half; ++i) {
            double cbar = 0, sbar = 0;
            for (int64_t pos = P; pos < P + p_.n_future; ++pos) {
                const double a = double(pos) * double(c.rope.inv_freq[size_t(i)]);
                cbar += std::cos(a);
                sbar += std::sin(a);
            }
            cbar /= double(p_.n_future);
            sbar /= double(p_.n_future);
            const int a = c.rope.half ? i : 2 * i, b = c.rope.half ? i + half : 2 * i + 1;
            R(a, a) = R(b, b) = cbar;
            R(a, b) = -sbar;
            R(b, a) = sbar;
        }
        const size_t L = c.layers.size();
        out->mu.assign(L, std::vector<Eigen::VectorXd>(size_t(c.n_head)));
        out->cov.assign(L, std::vector<Eigen::MatrixXd>(size_t(c.n_head)));
        const int64_t t0 = std::min<int64_t>(p_.n_sink, P);
        const int64_t N = P - t0;
        if (N <= 0) return out;
        for (size_t s = 0; s < L; ++s)
            for (int h = 0; h < c.n_head; ++h) {
                const std::vector<float> q = c.read(PlanField::q, c.layers[s], h, t0, P);
                // The pre-RoPE queries, one row each: every row rotated back by its position.
                Eigen::MatrixXd X(N, d);
                for (int64_t t = 0; t < N; ++t) {
                    Eigen::VectorXd x(d);
                    for (int a = 0; a < d; ++a) x(a) = double(q[size_t(t) * size_t(d) + size_t(a)]);
                    rotate(x.data(), d, c.rope, double(t0 + t), -1.0);
                    X.row(Eigen::Index(t)) = x.transpose();
                }
                const Eigen::VectorXd mu = X.colwise().mean().transpose();
                out->mu[s][size_t(h)] = R * mu;
                if (p_.use_cov) {
                    const Eigen::MatrixXd Xc = X.rowwise() - mu.transpose();
                    out->cov[s][size_t(h)] =
                        R * ((Xc.transpose() * Xc) / double(N)) * R.transpose();
                }
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
