// zack (Zhang & Shen 2024, "ZACK: Zero-Overhead LLM Inference Acceleration via Dimensionality
// Compression of the Key-Value Cache", arXiv 2408.04107): the K and V rows of every head kept in
// fewer dimensions. Each (layer, KV head) projects its keys and values onto the leading singular
// directions of its own rows; the cache stores r coefficients per row instead of d values (real
// bytes: UnitStore's low_rank format, kernels/packed_rows.h lr16 / lr32), and attention reads the
// reconstruction sum_k c_k b_k.
//
// The paper computes its SVD rotations offline from calibration data and folds them into the
// projection weights (zero overhead), with per-head / per-layer ranks chosen from the singular
// values under an accuracy constraint. kvscope's version, stated in the policy's details:
// - the bases come from the run's own prompt (the rows [0, P) of each unit at P, as stored),
//   uncentred (an SVD of the rows, like a rotation folded into W_k / W_v);
// - the rank of each unit and side is the smallest r whose leading squared singular values hold
//   `energy` of the total (adaptive per head and layer), or a fixed `rank`;
// - the bases are stored in the cache (fp32, counted in bytes), since they are not folded into
//   the model's weights here; decoding reconstructs the rows (ZACK's kernel computes in the
//   r-dimensional space: its speed is not reproduced).
// Prefill mode only: every row from P on, the prompt's and the decoded ones, is projected.
#include <fmt/format.h>
#include <Eigen/Dense>

#include <algorithm>

#include "common.h"
#include "engine/error.h"

namespace kvs::sim {

namespace {

struct ZackParams {
    double energy = 0.99;
    int rank = 0;  // 0: from energy
};

// The basis of rows x [n, d] (b_0 .. b_{r-1}, row-major [r, d]): the leading eigenvectors of
// x^T x (its right singular vectors), each with its largest-magnitude component positive (a
// fixed sign: the same basis for the same rows); r from the energy or fixed, in [1, d].
std::vector<float> basis(const std::vector<float>& x, int64_t n, int d, const ZackParams& p,
                         int* r_out) {
    Eigen::MatrixXd G = Eigen::MatrixXd::Zero(d, d);
    for (int64_t i = 0; i < n; ++i) {
        Eigen::Map<const Eigen::VectorXf> row(x.data() + size_t(i) * size_t(d), d);
        const Eigen::VectorXd r = row.cast<double>();
        G.selfadjointView<Eigen::Lower>().rankUpdate(r);
    }
    G = G.selfadjointView<Eigen::Lower>();
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(G);
    // Eigen sorts ascending: the leading directions are the last columns.
    const Eigen::VectorXd ev = es.eigenvalues().cwiseMax(0.0);
    const double total = ev.sum();
    int r = p.rank > 0 ? std::min(p.rank, d) : d;
    if (p.rank == 0 && total > 0) {
        double acc = 0;
        for (int k = 0; k < d; ++k) {
            acc += ev(d - 1 - k);
            if (acc >= p.energy * total) {
                r = k + 1;
                break;
            }
        }
    }
    std::vector<float> b(size_t(r) * size_t(d));
    for (int k = 0; k < r; ++k) {
        Eigen::VectorXd v = es.eigenvectors().col(d - 1 - k);
        Eigen::Index imax = 0;
        v.cwiseAbs().maxCoeff(&imax);
        if (v(imax) < 0) v = -v;
        for (int c = 0; c < d; ++c) b[size_t(k) * size_t(d) + size_t(c)] = float(v(c));
    }
    *r_out = r;
    return b;
}

class ZackLayer final : public LayerPolicy {
  public:
    ZackLayer(const ZackParams& p, int64_t P) : p_(p), P_(P) {}
    bool observes() const override { return false; }
    void update(int64_t t, std::vector<UnitStore>& units) override {
        if (t < P_) return;
        for (UnitStore& u : units) {
            if (u.rank_k() == 0) {
                // At P: the bases from the prompt's rows as stored.
                const int d = u.d();
                int64_t n = 0;
                while (n < u.size() && u.pos(int(n)) < P_) ++n;
                if (n == 0) continue;
                std::vector<float> k(size_t(n) * size_t(d)), v(size_t(n) * size_t(d));
                for (int64_t i = 0; i < n; ++i) {
                    u.k_row(int(i), k.data() + size_t(i) * size_t(d));
                    u.v_row(int(i), v.data() + size_t(i) * size_t(d));
                }
                int rk = 0, rv = 0;
                const std::vector<float> bk = basis(k, n, d, p_, &rk);
                const std::vector<float> bv = basis(v, n, d, p_, &rv);
                u.set_low_rank(bk, rk, bv, rv);
            }
            for (int i = 0; i < u.size(); ++i)
                if (u.store(i) == Store::full) u.project(i);
        }
    }

  private:
    ZackParams p_;
    int64_t P_;
};

class Zack final : public Policy {
  public:
    explicit Zack(const Params& p) {
        p_.energy = p.real("energy");
        p_.rank = p.integer("rank");
    }
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext& c) const override {
        if (c.mode != Mode::prefill)
            fail(
                "policy 'zack' projects every row onto bases taken from the prompt: prefill mode "
                "only (--mode prefill)");
        return std::make_unique<ZackLayer>(p_, c.prefill_len);
    }

  private:
    ZackParams p_;
};

}  // namespace

PolicyEntry policy_zack() {
    PolicyEntry e;
    e.info.name = "zack";
    e.info.summary =
        "ZACK: K and V rows kept in fewer dimensions (each head's leading singular directions)";
    e.info.details =
        "Prefill mode only. At P, each (layer, KV head) takes the SVD of its prompt's key rows "
        "and, apart, of its value rows (uncentred, as stored: the right singular vectors, i.e. "
        "the eigenvectors of X^T X); the rank r of each is the smallest whose leading squared "
        "singular values hold `energy` of the total (adaptive per head and layer), or `rank` "
        "when set. From then on every row, the prompt's and each decoded one, is stored as its "
        "r coefficients b_k . x at the store's full precision (2 r bytes in fp16), attention "
        "reading the reconstruction sum_k c_k b_k; the bases (4 + 4 d r bytes per side and "
        "unit, fp32) count in the cache's bytes. Differences from the paper (arXiv 2408.04107): "
        "its rotations come from offline calibration and are folded into the projection "
        "weights, kvscope's from the run's own prompt and stored in the cache; its attention "
        "kernel computes in the r-dimensional space, kvscope reconstructs the rows (same "
        "numbers up to rounding, not its speed). No eviction: combine the figures with an "
        "eviction policy's by bytes.";
    e.info.params = {
        param_real("energy", "0.99", 0.01, 1.0,
                   "share of the squared singular values the kept directions hold "
                   "(sets each unit's rank)"),
        param_int("rank", "0", 0, 4096, "a fixed rank for every unit and side (0: from energy)")};
    e.info.paper_mode = Mode::prefill;
    e.make = [](const Params& p) { return std::make_unique<Zack>(p); };
    return e;
}

}  // namespace kvs::sim
