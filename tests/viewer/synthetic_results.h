// Test helper: writes a small results file that follows simulator/results_schema.h exactly,
// from a toy policy (keep `sink` first tokens and the `budget - sink` most recent ones; older
// held tokens at 4 bits, the 16 most recent at 16), with knobs to break it for the error tests.
// bit_events (optional in the schema) hold the toy's one change per token: (unit, j, j + 16, 4)
// when token j is still held at step j + 16; toy_bits() is the exact width at any step.
// Schema 2 and 3 files get offload_bytes (0) and merged_into / merged_at: with fold_every > 0 the
// toy folds a token it drops into a sink token instead of evicting it (toy_merged_into()), like a
// merging policy's centroids; otherwise -1 throughout.
#pragma once
#include <hdf5.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "capture/h5util.h"
#include "capture/half.h"
#include "engine/error.h"

namespace kvs::test {

struct SyntheticRun {
    std::string policy = "window";
    int budget = 24, sink = 4;
    int64_t T = 100;
    std::vector<int32_t> layers = {0, 2};
    int n_head = 4, n_head_kv = 2, head_dim = 8;
    int C = 5;               // checkpoints
    int64_t prefill = 0;     // prefill mode when > 0
    bool bit_events = true;  // write the optional bit_events dataset
    // Written verbatim as the run's closed_loop_json attribute (v2: a `kvscope eval` run) when
    // not empty; err_mean and recall_mean attributes (NaN: as a live run writes them).
    std::string closed_loop_json;
    double err_mean = 0.1, recall_mean = 0.9;
    // Schema 3: tokens j >= sink with j % fold_every == 0 are folded, at the step the toy drops
    // them, into sink token j % sink (held throughout) instead of being evicted (0: none).
    int fold_every = 0;
};

struct ResultsOptions {
    int schema_version = 1;
    std::string format = "kvscope-results";
    std::string drop_dataset;     // e.g. "recall": left out of run 0
    bool bad_shape = false;       // held written as [S, L, H + 1]
    bool bad_steps = false;       // a step outside [0, T)
    int n_runs_attr = -1;         // -1: the real count
    bool bad_bit_events = false;  // a bit_events row naming a unit that does not exist
    bool bad_merges = false;      // schema 3: a token with merged_into but merged_at -1
};

namespace detail {

inline void write_ds(hid_t g, const std::string& name, hid_t file_type, hid_t mem_type,
                     const std::vector<hsize_t>& shape, const void* data) {
    capture::h5::Id sp(H5Screate_simple(int(shape.size()), shape.data(), nullptr));
    capture::h5::Id d(
        H5Dcreate2(g, name.c_str(), file_type, sp.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    KVS_ASSERT(d.valid());
    hsize_t n = 1;
    for (hsize_t s : shape) n *= s;
    if (n > 0) KVS_ASSERT(H5Dwrite(d.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
}

}  // namespace detail

// Whether the toy policy holds token j at step t (token index).
inline bool toy_held(const SyntheticRun& r, int64_t j, int64_t t, int l, int h) {
    if (j > t) return false;
    const int b = r.budget + l + h;  // differs per unit, so aggregation is visible
    if (t + 1 <= b) return true;
    return j < r.sink || j > t - (b - r.sink);
}

// The width the toy policy holds token j at in step t: 16 for the 16 most recent tokens, then 4;
// 0 when not held.
inline int toy_bits(const SyntheticRun& r, int64_t j, int64_t t, int l, int h) {
    if (!toy_held(r, j, t, l, h)) return 0;
    return t - j < 16 ? 16 : 4;
}

// The representative the toy folds token j into (at the step it drops it) when fold_every > 0,
// else -1.
inline int32_t toy_merged_into(const SyntheticRun& r, int64_t j) {
    if (r.fold_every <= 0 || r.sink <= 0 || j < r.sink || j % r.fold_every != 0) return -1;
    return int32_t(j % r.sink);
}

inline void write_synthetic_results(const std::string& path, const std::vector<SyntheticRun>& runs,
                                    const ResultsOptions& o = {}) {
    namespace h5 = capture::h5;
    h5::init();
    h5::Id f(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    KVS_ASSERT(f.valid());
    h5::write_attr(f.get(), "format", o.format, path);
    h5::write_attr(f.get(), "schema_version", int64_t(o.schema_version), path);
    h5::write_attr(f.get(), "kvscope_version", "0.1.0", path);
    h5::write_attr(f.get(), "created", "2025-01-31T12:00:00Z", path);
    h5::write_attr(f.get(), "command_line", "synthetic", path);
    h5::write_attr(f.get(), "n_runs",
                   int64_t(o.n_runs_attr >= 0 ? o.n_runs_attr : int(runs.size())), path);
    h5::Id rg(H5Gcreate2(f.get(), "runs", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    for (size_t k = 0; k < runs.size(); ++k) {
        const SyntheticRun& r = runs[k];
        char name[16];
        std::snprintf(name, sizeof name, "%04d", int(k));
        h5::Id g(H5Gcreate2(rg.get(), name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
        const hid_t gi = g.get();
        const std::string spec =
            r.policy + ":budget=" + std::to_string(r.budget) + ",sink=" + std::to_string(r.sink);
        h5::write_attr(gi, "policy", r.policy, path);
        h5::write_attr(gi, "spec", spec, path);
        h5::write_attr(gi, "params_json", "{\"budget\": " + std::to_string(r.budget) + "}", path);
        h5::write_attr(gi, "budget", std::to_string(r.budget), path);
        h5::write_attr(gi, "mode", r.prefill > 0 ? "prefill" : "stream", path);
        h5::write_attr(gi, "prefill_len", r.prefill, path);
        h5::write_attr(gi, "trace_path", "synthetic.h5", path);
        h5::write_attr(gi, "trace_model", "synthetic", path);
        h5::write_attr(gi, "trace_task", "text", path);
        h5::write_attr_bool(gi, "trace_complete", true, path);
        h5::write_attr(gi, "n_tokens", r.T, path);
        h5::write_attr(gi, "n_head", int64_t(r.n_head), path);
        h5::write_attr(gi, "n_head_kv", int64_t(r.n_head_kv), path);
        h5::write_attr(gi, "head_dim", int64_t(r.head_dim), path);
        h5::write_attr(gi, "seconds", 0.5, path);
        h5::write_attr(gi, "recall_mean", r.recall_mean, path);
        h5::write_attr(gi, "err_mean", r.err_mean, path);
        if (!r.closed_loop_json.empty())
            h5::write_attr(gi, "closed_loop_json", r.closed_loop_json, path);
        h5::write_attr(gi, "ratio_mean", 3.0, path);

        const int64_t T = r.T, L = int64_t(r.layers.size()), H = r.n_head_kv, C = r.C;
        std::vector<int32_t> steps;
        for (int64_t t = r.prefill; t < T; ++t) steps.push_back(int32_t(t));
        if (o.bad_steps) steps.back() = int32_t(T + 5);
        const int64_t S = int64_t(steps.size());
        std::vector<float> recall(size_t(S * L * H)), err(recall.size()), cosv(recall.size());
        std::vector<int32_t> held(recall.size()), budget(recall.size());
        std::vector<int64_t> bytes(recall.size()), full(static_cast<size_t>(S));
        std::vector<int32_t> ev(size_t(L * H * T), -1);
        for (int64_t s = 0; s < S; ++s) {
            const int64_t t = std::min<int64_t>(steps[size_t(s)], T - 1);
            full[size_t(s)] = (t + 1) * 2 * r.head_dim * 2;
            for (int l = 0; l < L; ++l)
                for (int h = 0; h < H; ++h) {
                    const size_t i = size_t((s * L + l) * H + h);
                    int n = 0;
                    int64_t by = 0;
                    for (int64_t j = 0; j <= t; ++j)
                        if (toy_held(r, j, t, l, h)) {
                            ++n;
                            by += (t - j < 16 ? 16 : 4) * 2 * r.head_dim / 8;
                        }
                    held[i] = n;
                    budget[i] = r.budget + l + h;
                    bytes[i] = by;
                    recall[i] = float(n) / float(t + 1);
                    err[i] = 1.0f - recall[i] + 0.01f * float(l);
                    cosv[i] = recall[i];
                }
        }
        for (int l = 0; l < L; ++l)
            for (int h = 0; h < H; ++h)
                for (int64_t j = 0; j < T; ++j)
                    for (int64_t t = j; t < T; ++t)
                        if (!toy_held(r, j, t, l, h)) {
                            ev[size_t((l * H + h) * T + j)] = int32_t(t);
                            break;
                        }
        // Merges: a folded token's merged_at is the step it left (its evicted_at).
        std::vector<int32_t> m_into(ev.size(), -1), m_at(ev.size(), -1);
        for (int l = 0; l < L; ++l)
            for (int h = 0; h < H; ++h)
                for (int64_t j = 0; j < T; ++j) {
                    const size_t i = size_t((l * H + h) * T + j);
                    if (ev[i] >= 0 && toy_merged_into(r, j) >= 0) {
                        m_into[i] = toy_merged_into(r, j);
                        m_at[i] = ev[i];
                    }
                }
        if (o.bad_merges) {
            const auto it =
                std::find_if(m_at.begin(), m_at.end(), [](int32_t x) { return x >= 0; });
            if (it != m_at.end()) *it = -1;
        }
        std::vector<int32_t> ck;
        for (int c = 0; c < C; ++c)
            ck.push_back(int32_t(r.prefill + (T - 1 - r.prefill) * (c + 1) / C));
        std::vector<uint8_t> bits(size_t(C * L * H * T), 0);
        std::vector<uint16_t> score(bits.size());
        std::vector<float> sc32(bits.size(), NAN);
        for (int c = 0; c < C; ++c)
            for (int l = 0; l < L; ++l)
                for (int h = 0; h < H; ++h)
                    for (int64_t j = 0; j < T; ++j) {
                        const size_t i = size_t(((c * L + l) * H + h) * T + j);
                        const int64_t t = ck[size_t(c)];
                        if (toy_held(r, j, t, l, h)) {
                            bits[i] = t - j < 16 ? 16 : 4;
                            sc32[i] = 1.0f / float(1 + t - j);
                        }
                    }
        capture::f32_to_f16(sc32.data(), score.data(), sc32.size());
        // bit_events in step order (then unit, token): token j drops to 4 bits at step j + 16.
        std::vector<int32_t> events;
        for (int64_t t = 16; t < T; ++t)
            for (int l = 0; l < L; ++l)
                for (int h = 0; h < H; ++h) {
                    const int64_t j = t - 16;
                    if (toy_held(r, j, t, l, h))
                        events.insert(events.end(),
                                      {int32_t(l * H + h), int32_t(j), int32_t(t), int32_t(4)});
                }
        if (o.bad_bit_events && !events.empty()) events[0] = int32_t(L * H);

        using detail::write_ds;
        const hsize_t uS = hsize_t(S), uL = hsize_t(L), uH = hsize_t(H), uT = hsize_t(T),
                      uC = hsize_t(C);
        auto drop = [&](const char* n) { return k == 0 && o.drop_dataset == n; };
        if (!drop("layers"))
            write_ds(gi, "layers", H5T_STD_I32LE, H5T_NATIVE_INT32, {uL}, r.layers.data());
        if (!drop("steps"))
            write_ds(gi, "steps", H5T_STD_I32LE, H5T_NATIVE_INT32, {uS}, steps.data());
        if (!drop("recall"))
            write_ds(gi, "recall", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {uS, uL, uH}, recall.data());
        write_ds(gi, "out_rel_err", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {uS, uL, uH}, err.data());
        write_ds(gi, "out_cos", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {uS, uL, uH}, cosv.data());
        if (o.bad_shape) {
            std::vector<int32_t> big(size_t(S * L * (H + 1)));
            write_ds(gi, "held", H5T_STD_I32LE, H5T_NATIVE_INT32, {uS, uL, uH + 1}, big.data());
        } else {
            write_ds(gi, "held", H5T_STD_I32LE, H5T_NATIVE_INT32, {uS, uL, uH}, held.data());
        }
        write_ds(gi, "budget_tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, {uS, uL, uH}, budget.data());
        write_ds(gi, "bytes", H5T_STD_I64LE, H5T_NATIVE_INT64, {uS, uL, uH}, bytes.data());
        write_ds(gi, "full_bytes", H5T_STD_I64LE, H5T_NATIVE_INT64, {uS}, full.data());
        write_ds(gi, "evicted_at", H5T_STD_I32LE, H5T_NATIVE_INT32, {uL, uH, uT}, ev.data());
        if (o.schema_version >= 2) {
            const std::vector<int64_t> off(bytes.size(), 0);
            write_ds(gi, "offload_bytes", H5T_STD_I64LE, H5T_NATIVE_INT64, {uS, uL, uH},
                     off.data());
        }
        if (o.schema_version >= 3) {
            if (!drop("merged_into"))
                write_ds(gi, "merged_into", H5T_STD_I32LE, H5T_NATIVE_INT32, {uL, uH, uT},
                         m_into.data());
            write_ds(gi, "merged_at", H5T_STD_I32LE, H5T_NATIVE_INT32, {uL, uH, uT}, m_at.data());
        }
        write_ds(gi, "ckpt_steps", H5T_STD_I32LE, H5T_NATIVE_INT32, {uC}, ck.data());
        write_ds(gi, "ckpt_bits", H5T_STD_U8LE, H5T_NATIVE_UINT8, {uC, uL, uH, uT}, bits.data());
        if (r.bit_events)
            write_ds(gi, "bit_events", H5T_STD_I32LE, H5T_NATIVE_INT32,
                     {hsize_t(events.size() / 4), 4}, events.data());
        h5::Id f16 = h5::f16_type();
        write_ds(gi, "ckpt_score", f16.get(), f16.get(), {uC, uL, uH, uT}, score.data());
    }
}

}  // namespace kvs::test
