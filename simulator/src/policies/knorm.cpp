// knorm (Devoto et al. 2024, "A simple and effective L2 norm-based strategy for KV cache
// compression"; kvpress KnormPress, kvpress/presses/knorm_press.py:29-38): score = -||k||, so
// the keys with the smallest L2 norm are kept. Needs no attention. The rule per mode:
// keyscore.h.
#include <cmath>

#include "keyscore.h"

namespace kvs::sim {

namespace {

void knorm_scores(const UnitStore& u, int n, std::vector<float>& score) {
    std::vector<float> k(static_cast<size_t>(u.d()));
    for (int i = 0; i < n; ++i) {
        u.k_row(i, k.data());
        double s = 0;
        for (float x : k) s += double(x) * double(x);
        score[size_t(i)] = -float(std::sqrt(s));
    }
}

}  // namespace

PolicyEntry policy_knorm() {
    PolicyEntry e;
    e.info.name = "knorm";
    e.info.summary = "kvpress KnormPress: keep the keys with the smallest L2 norm";
    e.info.details =
        "score = -||k|| per KV head, from the keys as stored (kvpress knorm_press.py:29-38; "
        "Devoto et al. 2024); no attention, no window, no sinks. Paper mode: prefill (kvpress "
        "compresses the prompt once: the top `budget` prompt entries by score are kept at P, "
        "token P with them, decoding adds its tokens). Stream mode: while over budget the held "
        "entries but the newest are scored and the lowest evicted, so the budget holds at every "
        "step (kvpress's DecodingPress does it every compression_interval steps). Ties: the "
        "lower score evicted first, then the older token.";
    e.info.params = {param_budget(), param_bits(), param_group()};
    e.info.paper_mode = Mode::prefill;
    e.info.needs_budget = e.info.takes_budget = true;
    e.make = [](const Params& p) {
        return std::make_unique<detail::KeyScorePolicy>(p, knorm_scores);
    };
    return e;
}

}  // namespace kvs::sim
