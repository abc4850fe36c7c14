// keydiff (Park et al. 2025, "KeyDiff: key similarity-based KV cache eviction"; kvpress
// KeyDiffPress, kvpress/presses/keydiff_press.py:37-48): the anchor is the mean of the
// L2-normalised keys of the scored entries, score = -cos(k, anchor), so the keys least like the
// average are kept. Needs no attention. kvpress's single-pass press is followed (the paper's
// block-wise iteration is kvpress's BlockPress around it); the rule per mode: keyscore.h.
#include <cmath>

#include "keyscore.h"

namespace kvs::sim {

namespace {

void keydiff_scores(const UnitStore& u, int n, std::vector<float>& score) {
    const int d = u.d();
    std::vector<float> k(size_t(n) * size_t(d));
    std::vector<double> norm(static_cast<size_t>(n)), anchor(size_t(d), 0.0);
    for (int i = 0; i < n; ++i) {
        float* r = &k[size_t(i) * size_t(d)];
        u.k_row(i, r);
        double s = 0;
        for (int j = 0; j < d; ++j) s += double(r[j]) * double(r[j]);
        // F.normalize: x / max(||x||, 1e-12)
        norm[size_t(i)] = std::max(std::sqrt(s), 1e-12);
        for (int j = 0; j < d; ++j) anchor[size_t(j)] += r[j] / norm[size_t(i)];
    }
    double an = 0;
    for (double& a : anchor) {
        a /= double(n);
        an += a * a;
    }
    an = std::sqrt(an);
    for (int i = 0; i < n; ++i) {
        const float* r = &k[size_t(i) * size_t(d)];
        double dot = 0;
        for (int j = 0; j < d; ++j) dot += double(r[j]) * anchor[size_t(j)];
        // F.cosine_similarity: x.y / max(||x|| ||y||, 1e-8)
        score[size_t(i)] = -float(dot / std::max(norm[size_t(i)] * an, 1e-8));
    }
}

}  // namespace

PolicyEntry policy_keydiff() {
    PolicyEntry e;
    e.info.name = "keydiff";
    e.info.summary = "kvpress KeyDiffPress: keep the keys least similar to the mean key direction";
    e.info.details =
        "anchor = mean of the L2-normalised keys of the scored entries (per KV head, as "
        "stored), score = -cos(k, anchor) (kvpress keydiff_press.py:37-48; Park et al. 2025); "
        "no attention, no window, no sinks. kvpress's single pass is followed (the paper's "
        "block-wise iteration is kvpress's BlockPress around it, not reproduced). Paper mode: "
        "prefill (the prompt compressed once at P to its top `budget` entries, token P with "
        "them). Stream mode: while over budget the anchor is recomputed over the held entries "
        "but the newest and the lowest evicted, so the budget holds at every step. Ties: the "
        "lower score evicted first, then the older token.";
    e.info.params = {param_budget(), param_bits(), param_group()};
    e.info.paper_mode = Mode::prefill;
    e.info.needs_budget = e.info.takes_budget = true;
    e.make = [](const Params& p) {
        return std::make_unique<detail::KeyScorePolicy>(p, keydiff_scores);
    };
    return e;
}

}  // namespace kvs::sim
