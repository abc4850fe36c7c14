// uncomp (Xiong et al. 2024, "UNComp: Uncertainty-Aware Long-Context Compressor"; official code
// menik1126/UNComp): SnapKV selection whose capacity differs between the heads of a layer, set by
// each head's truncated matrix entropy.
//
// Entropy (uncomp/utils/entropy_utils.py, get_entropy_head_svd_4_dimensions_single_batch and
// cal_entropy_no_group_svd): X = a head's rows over the prompt [N, d]; each row minus the rows'
// mean, then divided by its L2 norm (normalize); A = Z^T Z / N (cal_cov_4); the eigenvalues of
// A / trace(A) + 1e-10 I, largest first (np.linalg.svd of a symmetric positive matrix); H = -sum
// of lambda log lambda over the largest `svdn` of them, divided by log d. The official head
// search (uncomp_utils.py, head_type_search_*) computes it from the query states.
//
// Capacities (uncomp_utils.py:272-343, the plain "uncomp" method): with C = max_capacity_prompt
// (budget, window included), C' = C * 3 // 2: the half of the heads with the higher entropy keep
// C' entries, the other half C' // 2 (each minus the window scored by SnapKV, the window kept);
// with a prompt of at most C' tokens, [P // 2, P]. The mean is 9/8 C. alloc=equal keeps the 2 : 1
// ratio but scales both so that the layer's mean is C (kvscope's choice, to compare at equal
// bytes).
//
// Where kvscope differs (documented in the policy's details):
// - the official code ranks heads once, offline, from calibration prompts (search/*.csv); kvscope
//   ranks them from the run's own prompt (the same rows at the same step);
// - GQA: a KV head's entropy is the mean of its query heads' (source=q), or its keys' own
//   (source=k); the official code runs on MHA models (Llama 2, Mistral 7B v0.1 uses GQA through
//   repeat_kv, i.e. per query head);
// - an odd head count: the lower floor(n / 2) heads form the low group (the official slices take
//   n // 2 from each end and would leave the middle head out);
// - the hidden-state compression of UNComp's "stage" variants changes the inputs of later layers:
//   not implemented (the KV cache part only).
#include <fmt/format.h>
#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/error.h"
#include "snap.h"

namespace kvs::sim {

namespace detail {

// Truncated matrix entropy of rows x [n, d] (official formula above); 0 for n < 1.
double truncated_matrix_entropy(const float* x, int64_t n, int d, int svdn) {
    if (n < 1 || d < 2) return 0.0;
    Eigen::MatrixXd R(n, d);
    for (int64_t i = 0; i < n; ++i)
        for (int c = 0; c < d; ++c)
            R(Eigen::Index(i), c) = double(x[size_t(i) * size_t(d) + size_t(c)]);
    const Eigen::RowVectorXd mean = R.colwise().mean();
    R.rowwise() -= mean;
    // normalize(): R / ||R||; then F.normalize (max(norm, 1e-12)): a zero row stays zero.
    for (Eigen::Index i = 0; i < R.rows(); ++i) {
        const double nr = R.row(i).norm();
        R.row(i) /= std::max(nr, 1e-12);
    }
    const Eigen::MatrixXd A = (R.transpose() * R) / double(n);
    const double tr = A.trace();
    if (!(tr > 0)) return 0.0;
    const Eigen::MatrixXd An = A / tr + 1e-10 * Eigen::MatrixXd::Identity(d, d);
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(An, Eigen::EigenvaluesOnly);
    std::vector<double> ev(static_cast<size_t>(d));
    for (int c = 0; c < d; ++c) ev[size_t(c)] = std::abs(es.eigenvalues()(c));  // singular values
    std::sort(ev.begin(), ev.end(), std::greater<double>());
    double h = 0;
    for (int c = 0; c < std::min(svdn, d); ++c)
        if (ev[size_t(c)] > 0) h -= ev[size_t(c)] * std::log(ev[size_t(c)]);
    return h / std::log(double(d));
}

}  // namespace detail

namespace {

struct UncompPlan {
    int64_t step = -1;            // the step the entropies were taken at (-1: none)
    std::vector<double> entropy;  // [slot * n_kv + g]
    std::vector<int8_t> high;     // [slot * n_kv + g]: 1 = the higher-entropy group
};

class Uncomp final : public Policy {
  public:
    explicit Uncomp(const Params& p)
        : p_(detail::snap_params(p, "uncomp")),
          svdn_(p.integer("svdn")),
          from_q_(p.str("source") == "q"),
          equal_(p.str("alloc") == "equal") {}
    bool plans_from_rows() const override { return true; }
    bool plan_reads_all_queries() const override { return from_q_; }
    UnitRoles unit_roles(const void* plan) const override {
        const auto* u = static_cast<const UncompPlan*>(plan);
        if (!u || u->step < 0) return {};
        UnitRoles r;
        r.names = {"low entropy", "high entropy"};
        r.role = u->high;
        return r;
    }
    std::shared_ptr<const void> plan(const PlanContext& c) const override {
        KVS_ASSERT(c.read);
        auto out = std::make_shared<UncompPlan>();
        const int64_t t0 = detail::plan_step(c, p_.budget);
        if (t0 < 1) return out;
        out->step = t0;
        const size_t L = c.layers.size(), G = size_t(c.n_kv);
        out->entropy.assign(L * G, 0.0);
        out->high.assign(L * G, 0);
        for (size_t s = 0; s < L; ++s) {
            for (size_t g = 0; g < G; ++g) {
                double& e = out->entropy[s * G + g];
                if (from_q_) {
                    int nh = 0;
                    for (int h = 0; h < c.n_head; ++h) {
                        if (c.kv_of_q[size_t(h)] != int(g)) continue;
                        const std::vector<float> q = c.read(PlanField::q, c.layers[s], h, 0, t0);
                        e += detail::truncated_matrix_entropy(q.data(), t0, c.d, svdn_);
                        ++nh;
                    }
                    if (nh > 0) e /= nh;
                } else {
                    const std::vector<float> k = c.read(PlanField::k, c.layers[s], int(g), 0, t0);
                    e = detail::truncated_matrix_entropy(k.data(), t0, c.d, svdn_);
                }
            }
            // Ascending entropy (ties: the lower head first); the first floor(G / 2) are low.
            std::vector<size_t> order(G);
            std::iota(order.begin(), order.end(), size_t(0));
            std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
                return out->entropy[s * G + a] < out->entropy[s * G + b];
            });
            for (size_t r = G / 2; r < G; ++r) out->high[s * G + order[r]] = 1;
        }
        return out;
    }
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext& c) const override {
        const auto* plan = static_cast<const UncompPlan*>(c.plan);
        std::vector<int8_t> high(size_t(c.n_kv), 1);
        int64_t from = 0;
        if (plan && plan->step >= 0) {
            from = plan->step;
            for (int g = 0; g < c.n_kv; ++g)
                high[size_t(g)] = plan->high[size_t(c.slot) * size_t(c.n_kv) + size_t(g)];
        }
        const bool equal = equal_;
        const int64_t P = c.prefill_len;
        const bool prefill = c.mode == Mode::prefill;
        return std::make_unique<detail::SnapLayer>(
            p_, c,
            [high, from, equal, P, prefill](int64_t C, int64_t n, int64_t w,
                                            const std::vector<std::vector<float>>& cand) {
                const size_t G = cand.size();
                std::vector<int64_t> k(G, std::max<int64_t>(0, C - w));
                if (n < from) return k;  // stream mode before the plan step: snapkv
                int64_t lo = 0, hi = 0;
                if (equal) {
                    // Scored counts lo : hi = 1 : 2, the layer's mean C - w.
                    int64_t n_hi = 0;
                    for (int8_t h : high) n_hi += h;
                    const int64_t n_lo = int64_t(G) - n_hi;
                    const int64_t base = std::max<int64_t>(0, C - w);
                    lo = base * int64_t(G) / std::max<int64_t>(1, n_lo + 2 * n_hi);
                    hi = 2 * lo;
                } else {
                    // uncomp_utils.py:291-298: C' = C * 3 // 2, [C' // 2, C'], each at most
                    // the prompt; a prompt of at most C' tokens: [P // 2, P].
                    const int64_t q_len = prefill ? P : n;
                    int64_t c_hi = C * 3 / 2, c_lo = c_hi / 2;
                    if (q_len <= c_hi) c_lo = q_len / 2, c_hi = q_len;
                    lo = std::max<int64_t>(0, std::min(c_lo, q_len) - w);
                    hi = std::max<int64_t>(0, std::min(c_hi, q_len) - w);
                }
                for (size_t g = 0; g < G; ++g) k[g] = high[g] ? hi : lo;
                return k;
            });
    }

  private:
    detail::SnapParams p_;
    int svdn_;
    bool from_q_, equal_;
};

}  // namespace

PolicyEntry policy_uncomp() {
    PolicyEntry e;
    e.info.name = "uncomp";
    e.info.summary =
        "UNComp: SnapKV with per-head capacities from truncated matrix entropy (high-entropy "
        "heads keep twice the entries of low-entropy ones)";
    e.info.details =
        "Plan (at P in prefill mode; stream mode: at the plan step of dynamickv): each KV head's "
        "truncated matrix entropy over the rows [0, P) of its query heads (source=q, the "
        "official head search's input; mean over the group's query heads) or of its keys "
        "(source=k): rows centred and L2-normalised, A = Z^T Z / N, the largest `svdn` "
        "eigenvalues of A / trace(A), -sum lambda log lambda / log d "
        "(uncomp/utils/entropy_utils.py). In each layer the floor(n_kv / 2) heads of lowest "
        "entropy form the low group, the others the high group (the unit roles of the results "
        "file). alloc=official (uncomp_utils.py:272-343): with C = budget and C' = C * 3 // 2, "
        "high heads keep C' entries and low heads C' // 2, window included ([P // 2, P] when "
        "the prompt is at most C'); the mean over an even head count is 9/8 C, over SmolLM2's "
        "3 KV heads 5/4 C: compare by bytes. alloc=equal: the same 1 : 2 ratio, scaled so that "
        "the layer's mean is the budget. Tokens are selected per head as in snapkv (window "
        "queries' attention summed, pooled, top-k). Deviations: the official code ranks the "
        "heads once from calibration prompts, kvscope from the run's own prompt; the hidden-"
        "state compression of UNComp's 'stage' variants (which changes later layers' inputs) "
        "is not implemented. Paper mode: prefill; stream mode re-selects as snapkv does, "
        "with the same per-head shares from the plan step on; live: prefill mode.";
    e.info.params = detail::snap_param_defs("7", "max");
    // The official LongBench script's window (run_longbench.py:244-249: 8, kernel 7, maxpool).
    e.info.params[1] = param_int("window", "8", 1, 1e6,
                                 "observation window: the last queries that score, and the "
                                 "newest tokens always kept");
    e.info.params.push_back(param_int("svdn", "32", 1, 1e6,
                                      "eigenvalues in the truncated entropy (the official "
                                      "search's svdn)"));
    e.info.params.push_back(param_choice("source", "q", {"q", "k"},
                                         "rows whose entropy ranks the heads: the queries (mean "
                                         "over a KV head's query heads) or the keys"));
    e.info.params.push_back(param_choice("alloc", "official", {"official", "equal"},
                                         "official: high heads 3/2 budget, low heads 3/4; "
                                         "equal: the same 2 : 1 ratio with a mean of budget"));
    e.info.paper_mode = Mode::prefill;
    e.info.needs_budget = e.info.takes_budget = true;
    e.make = [](const Params& p) { return std::make_unique<Uncomp>(p); };
    return e;
}

}  // namespace kvs::sim
