// The closed-loop view's data (see closed_loop.h).
#include "viewdata/closed_loop.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "viewdata/csv.h"

namespace kvs::view {

namespace {
constexpr double kNaND = std::numeric_limits<double>::quiet_NaN();
}

const std::vector<ClosedLoopColumn>& closed_loop_columns() {
    static const std::vector<ClosedLoopColumn> c = {
        {"recall_mean", "replay_recall_mean", "recall",
         "replay: mean attention-mass recall of the held tokens (open loop)", true, false},
        {"err_mean", "replay_err_mean", "out err",
         "replay: mean relative L2 output error of attention (out_rel_err), open loop", true,
         false},
        {"err_p95", "replay_err_p95", "err p95", "replay: 95th percentile of the output error",
         true, false},
        {"bytes_mean", "replay_bytes_mean", "MiB",
         "replay: K+V bytes held per step (mean), summed over the replayed units", true, true},
        {"offload_bytes_mean", "replay_offload_bytes_mean", nullptr, nullptr, true, true},
        {"kl_mean", "eval_kl_mean", "KL mean",
         "closed loop: mean KL(full || compressed) of the next-token distribution", false, false},
        {"kl_p95", "eval_kl_p95", "KL p95", "closed loop: 95th percentile of the KL", false, false},
        {"delta_ppl", "eval_delta_ppl", "d ppl",
         "closed loop: perplexity with the compressed cache minus the full model's", false, false},
        {"ppl", "eval_ppl", nullptr, nullptr, false, false},
        {"ppl_full", "eval_ppl_full", nullptr, nullptr, false, false},
        {"top1_agree", "eval_top1_agree", "top-1",
         "closed loop: share of scored tokens whose argmax equals the full model's", false, false},
        {"accuracy", "eval_accuracy", "accuracy",
         "closed loop: passkey / needle exact-match accuracy over the grid", false, false},
        {"kv_bytes_mean", "eval_kv_bytes_mean", "MiB",
         "closed loop: the live cache's real K+V bytes (mean over decoding steps, all layers and "
         "KV heads)",
         false, true},
        {"kv_bytes_peak", "eval_kv_bytes_peak", nullptr, nullptr, false, true},
        {"offload_bytes_mean", "eval_offload_bytes_mean", "offload MiB",
         "closed loop: offloaded full-precision copies (agacc's restore source), mean", false,
         true},
        {"tokens_per_s", "eval_tokens_per_s", nullptr, nullptr, false, false},
        {"ttft_s", "eval_ttft_s", nullptr, nullptr, false, false},
    };
    return c;
}

double ClosedLoopRow::value(const std::string& key, bool replay) const {
    const auto& cols = closed_loop_columns();
    for (size_t k = 0; k < cols.size() && k < values.size(); ++k)
        if (cols[k].replay == replay && key == cols[k].key) return values[k];
    return kNaND;
}

std::vector<ClosedLoopRow> closed_loop_rows(const std::vector<const RunInfo*>& runs,
                                            const std::vector<std::string>& labels) {
    const auto& cols = closed_loop_columns();
    std::vector<ClosedLoopRow> rows;
    for (size_t i = 0; i < runs.size(); ++i) {
        const RunInfo& r = *runs[i];
        const bool eval = r.is_closed_loop();
        auto finite = [&](const char* k) {
            auto it = r.summary.find(k);
            return it != r.summary.end() && std::isfinite(it->second);
        };
        if (!eval && !finite("recall_mean") && !finite("err_mean")) continue;
        const std::string spec = r.spec.empty() ? r.policy : r.spec;
        auto it = std::find_if(rows.begin(), rows.end(), [&](const ClosedLoopRow& x) {
            return x.spec == spec && x.mode == r.mode;
        });
        if (it == rows.end()) {
            ClosedLoopRow x;
            x.spec = spec;
            x.policy = r.policy;
            x.budget = r.budget;
            x.mode = r.mode;
            x.label = i < labels.size() ? labels[i] : spec;
            const size_t cut = x.label.rfind(" (prefill ");
            if (cut != std::string::npos) x.label = x.label.substr(0, cut);
            if (x.mode == "prefill") x.label += " (prefill)";
            rows.push_back(std::move(x));
            it = rows.end() - 1;
        }
        if (r.mode == "prefill" && std::find(it->prefill_lens.begin(), it->prefill_lens.end(),
                                             r.prefill_len) == it->prefill_lens.end())
            it->prefill_lens.push_back(r.prefill_len);
        (eval ? it->eval_runs : it->replay_runs).push_back(int(i));
        if (eval && it->task.empty()) it->task = r.closed_loop_task;
    }
    for (ClosedLoopRow& x : rows) {
        x.values.assign(cols.size(), kNaND);
        for (size_t k = 0; k < cols.size(); ++k) {
            double sum = 0;
            int n = 0;
            for (int i : cols[k].replay ? x.replay_runs : x.eval_runs) {
                const auto& m =
                    cols[k].replay ? runs[size_t(i)]->summary : runs[size_t(i)]->closed_loop;
                auto f = m.find(cols[k].key);
                if (f != m.end() && std::isfinite(f->second)) {
                    sum += f->second;
                    ++n;
                }
            }
            if (n > 0) x.values[k] = sum / n;
        }
    }
    return rows;
}

ClosedLoopPoints closed_loop_points(const std::vector<ClosedLoopRow>& rows) {
    ClosedLoopPoints p;
    bool any_kl = false;
    for (const auto& r : rows) any_kl |= r.matched() && std::isfinite(r.value("kl_mean", false));
    for (size_t i = 0; i < rows.size(); ++i) {
        const ClosedLoopRow& r = rows[i];
        if (!r.matched()) continue;
        const double x = r.value("err_mean", true);
        const double y = any_kl ? r.value("kl_mean", false) : 1 - r.value("accuracy", false);
        if (!std::isfinite(x) || !std::isfinite(y)) continue;
        p.x.push_back(x);
        p.y.push_back(y);
        p.row.push_back(int(i));
    }
    if (!p.x.empty()) p.y_key = any_kl ? "kl_mean" : "1-accuracy";
    return p;
}

namespace {

std::vector<double> ranks(const std::vector<double>& v) {
    std::vector<size_t> idx(v.size());
    std::iota(idx.begin(), idx.end(), size_t(0));
    std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
    std::vector<double> r(v.size());
    for (size_t i = 0; i < idx.size();) {
        size_t j = i;
        while (j + 1 < idx.size() && v[idx[j + 1]] == v[idx[i]]) ++j;
        const double avg = 0.5 * double(i + j) + 1;
        for (size_t k = i; k <= j; ++k) r[idx[k]] = avg;
        i = j + 1;
    }
    return r;
}

}  // namespace

double spearman(const std::vector<double>& x, const std::vector<double>& y) {
    if (x.size() != y.size() || x.size() < 2) return kNaND;
    const std::vector<double> rx = ranks(x), ry = ranks(y);
    const double n = double(x.size());
    double mx = 0, my = 0;
    for (size_t i = 0; i < rx.size(); ++i) {
        mx += rx[i] / n;
        my += ry[i] / n;
    }
    double sxy = 0, sxx = 0, syy = 0;
    for (size_t i = 0; i < rx.size(); ++i) {
        sxy += (rx[i] - mx) * (ry[i] - my);
        sxx += (rx[i] - mx) * (rx[i] - mx);
        syy += (ry[i] - my) * (ry[i] - my);
    }
    if (sxx <= 0 || syy <= 0) return kNaND;
    return sxy / std::sqrt(sxx * syy);
}

void write_closed_loop_csv(const std::string& path, const std::vector<ClosedLoopRow>& rows) {
    const auto& cols = closed_loop_columns();
    CsvWriter w(path);
    std::vector<std::string> hdr = {"label",       "spec", "policy",      "budget",   "mode",
                                    "prefill_len", "task", "replay_runs", "eval_runs"};
    for (const auto& c : cols) hdr.push_back(c.csv);
    w.row(hdr);
    for (const ClosedLoopRow& r : rows) {
        std::string p;
        for (int64_t v : r.prefill_lens) p += (p.empty() ? "" : " ") + std::to_string(v);
        std::vector<std::string> f = {r.label,
                                      r.spec,
                                      r.policy,
                                      r.budget,
                                      r.mode,
                                      p,
                                      r.task,
                                      std::to_string(r.replay_runs.size()),
                                      std::to_string(r.eval_runs.size())};
        for (double v : r.values) f.push_back(csv_number(v));
        w.row(f);
    }
    w.close();
}

}  // namespace kvs::view
