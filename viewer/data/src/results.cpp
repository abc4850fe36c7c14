// Reader of kvscope results files (see results.h; format: simulator/results_schema.h).
#include "viewdata/results.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "capture/h5util.h"
#include "capture/half.h"
#include "engine/error.h"
#include "viewdata/trace_data.h"

namespace kvs::view {

namespace h5 = kvs::capture::h5;
using h5::Id;

int RunData::layer_index(int model_layer) const {
    for (size_t i = 0; i < layers.size(); ++i)
        if (layers[i] == model_layer) return int(i);
    return -1;
}

int RunData::step_index(int64_t t) const {
    auto it = std::lower_bound(steps.begin(), steps.end(), int32_t(t));
    if (it == steps.end() || *it != t) return -1;
    return int(it - steps.begin());
}

TokenState RunData::token_state(int64_t l, int64_t h, int64_t j, int64_t t) const {
    if (j > t) return TokenState::Future;
    if (held_at(l, h, j, t)) return TokenState::Held;
    if (!has_merges) return TokenState::Evicted;
    const size_t i = lht(l, h, j);
    const int32_t at = merged_at[i];
    // Before its last fold a token folded twice sat in an entry that was held until then.
    if (at < 0 || t < evicted_at[i]) return TokenState::Evicted;
    if (t < at) return TokenState::Folded;
    return held_at(l, h, merged_into[i], t) ? TokenState::Folded : TokenState::Evicted;
}

std::vector<int32_t> RunData::stands_for(int64_t l, int64_t h, int64_t rep, int64_t t) const {
    std::vector<int32_t> out;
    if (rep < 0 || rep >= T || !held_at(l, h, rep, t)) return out;
    out.push_back(int32_t(rep));
    if (!has_merges) return out;
    const size_t base = lht(l, h, 0);
    for (int64_t j = 0; j < T; ++j)
        if (merged_into[base + size_t(j)] == rep && merged_at[base + size_t(j)] >= 0 &&
            merged_at[base + size_t(j)] <= t)
            out.push_back(int32_t(j));
    std::sort(out.begin(), out.end());
    return out;
}

std::vector<int32_t> RunData::entry_sizes(int64_t l, int64_t h, int64_t t) const {
    std::vector<int32_t> n(static_cast<size_t>(T), 0);
    for (int64_t j = 0; j < T; ++j) n[size_t(j)] = held_at(l, h, j, t) ? 1 : 0;
    if (!has_merges) return n;
    const size_t base = lht(l, h, 0);
    for (int64_t j = 0; j < T; ++j) {
        const int32_t at = merged_at[base + size_t(j)], rep = merged_into[base + size_t(j)];
        if (at >= 0 && at <= t && n[size_t(rep)] > 0) ++n[size_t(rep)];
    }
    return n;
}

std::string RunData::label() const {
    std::string s = info.spec.empty() ? info.policy : info.spec;
    if (s.size() > 48) s = s.substr(0, 45) + "...";
    return s;
}

namespace {

enum class Kind { Float, Int };

struct Loader {
    hid_t file;
    std::string where;  // "results 'path'"

    Id open(const std::string& path, Kind kind, const std::vector<uint64_t>& shape,
            const char* dims) const {
        if (!h5::link_exists(file, path)) fail("{}: missing dataset '{}'", where, path);
        Id d(H5Dopen2(file, path.c_str(), H5P_DEFAULT));
        if (!d.valid())
            fail("{}: '{}' is not a readable dataset: {}", where, path, h5::last_error());
        Id t(H5Dget_type(d.get()));
        const H5T_class_t c = H5Tget_class(t.get());
        if ((kind == Kind::Float && c != H5T_FLOAT) || (kind == Kind::Int && c != H5T_INTEGER))
            fail("{}: dataset '{}' is not {}", where, path,
                 kind == Kind::Float ? "floating-point" : "integer");
        const std::vector<uint64_t> got = h5::shape_of(d.get());
        if (got != shape)
            fail("{}: dataset '{}' has shape {}, expected {} ({})", where, path, h5::shape_str(got),
                 h5::shape_str(shape), dims);
        return d;
    }

    template <class T>
    std::vector<T> read(const std::string& path, Kind kind, const std::vector<uint64_t>& shape,
                        const char* dims, hid_t mem_type) const {
        Id d = open(path, kind, shape, dims);
        size_t n = 1;
        for (uint64_t s : shape) n *= size_t(s);
        std::vector<T> out(n);
        if (n > 0 && H5Dread(d.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
            fail("{}: cannot read '{}': {}", where, path, h5::last_error());
        return out;
    }

    std::vector<float> read_floats(const std::string& path, const std::vector<uint64_t>& shape,
                                   const char* dims) const {
        Id d = open(path, Kind::Float, shape, dims);
        size_t n = 1;
        for (uint64_t s : shape) n *= size_t(s);
        std::vector<float> out(n);
        if (n == 0) return out;
        Id ft(H5Dget_type(d.get()));
        if (h5::is_f16(ft.get())) {
            std::vector<uint16_t> h(n);
            Id f16 = h5::f16_type();
            if (H5Dread(d.get(), f16.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, h.data()) < 0)
                fail("{}: cannot read '{}': {}", where, path, h5::last_error());
            capture::f16_to_f32(h.data(), out.data(), n);
        } else if (H5Dread(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) <
                   0) {
            fail("{}: cannot read '{}': {}", where, path, h5::last_error());
        }
        return out;
    }

    // Length of the 1-D dataset `path` (checked to be 1-D).
    uint64_t length(const std::string& path) const {
        if (!h5::link_exists(file, path)) fail("{}: missing dataset '{}'", where, path);
        Id d(H5Dopen2(file, path.c_str(), H5P_DEFAULT));
        if (!d.valid())
            fail("{}: '{}' is not a readable dataset: {}", where, path, h5::last_error());
        const std::vector<uint64_t> s = h5::shape_of(d.get());
        if (s.size() != 1)
            fail("{}: dataset '{}' has shape {}, expected one dimension", where, path,
                 h5::shape_str(s));
        return s[0];
    }
};

const char* kSummary[] = {
    "recall_mean",       "recall_p5",       "err_mean",           "err_p95",
    "cos_mean",          "cos_p5",          "held_mean",          "bytes_mean",
    "bytes_peak",        "full_bytes_mean", "full_bytes_at_peak", "ratio_mean",
    "ratio_at_peak",     "restores",        "answer_kept",        "offload_bytes_mean",
    "offload_bytes_peak"};

// closed_loop_json (v2, optional): a JSON object; its numbers (null = NaN) and its task.
void parse_closed_loop(const std::string& w, RunInfo& i) {
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(i.closed_loop_json);
    } catch (const nlohmann::json::exception& e) {
        std::string m = e.what();
        for (char& c : m)
            if (c == '\n' || c == '\r') c = ' ';
        fail("{}: closed_loop_json is not valid JSON: {}", w, m);
    }
    if (!j.is_object())
        fail("{}: closed_loop_json is not a JSON object (it is a {})", w, j.type_name());
    for (auto it = j.begin(); it != j.end(); ++it) {
        const auto& v = it.value();
        if (v.is_number())
            i.closed_loop[it.key()] = v.get<double>();
        else if (v.is_null())
            i.closed_loop[it.key()] = std::numeric_limits<double>::quiet_NaN();
        else if (it.key() == "task" && v.is_string())
            i.closed_loop_task = v.get<std::string>();
    }
}

void read_run(const Loader& ld, hid_t file, const std::string& group, int version, RunData& r) {
    Id g(H5Gopen2(file, group.c_str(), H5P_DEFAULT));
    if (!g.valid()) fail("{}: '{}' is not a group", ld.where, group);
    const std::string w = ld.where + " " + group;
    const hid_t gi = g.get();
    RunInfo& i = r.info;
    i.group = group;
    auto str = [&](const char* n) { return h5::read_attr_str(gi, n, w); };
    auto num = [&](const char* n) { return h5::read_attr_int(gi, n, w); };
    i.policy = str("policy");
    i.spec = str("spec");
    i.params_json = h5::has_attr(gi, "params_json") ? str("params_json") : "{}";
    i.budget = str("budget");
    i.mode = str("mode");
    if (i.mode != "stream" && i.mode != "prefill")
        fail("{}: mode '{}' is neither 'stream' nor 'prefill'", w, i.mode);
    i.prefill_len = num("prefill_len");
    i.trace_path = str("trace_path");
    i.trace_model = h5::has_attr(gi, "trace_model") ? str("trace_model") : "";
    i.trace_task = h5::has_attr(gi, "trace_task") ? str("trace_task") : "";
    i.trace_complete =
        h5::has_attr(gi, "trace_complete") ? h5::read_attr_bool(gi, "trace_complete", w) : true;
    i.n_tokens = num("n_tokens");
    i.n_head = int(num("n_head"));
    i.n_head_kv = int(num("n_head_kv"));
    i.head_dim = int(num("head_dim"));
    if (i.n_tokens < 0 || i.n_tokens > (int64_t(1) << 31))
        fail("{}: n_tokens {} is out of range", w, i.n_tokens);
    if (i.n_head_kv < 1 || i.n_head_kv > 100000 || i.n_head < i.n_head_kv)
        fail("{}: n_head {} / n_head_kv {} are out of range", w, i.n_head, i.n_head_kv);
    if (i.prefill_len < 0 || i.prefill_len > i.n_tokens)
        fail("{}: prefill_len {} is outside [0, n_tokens {}]", w, i.prefill_len, i.n_tokens);
    i.seconds = h5::has_attr(gi, "seconds") ? h5::read_attr_float(gi, "seconds", w) : 0;
    for (const char* s : kSummary)
        if (h5::has_attr(gi, s)) i.summary[s] = h5::read_attr_float(gi, s, w);
    if (h5::has_attr(gi, "closed_loop_json")) {
        i.closed_loop_json = str("closed_loop_json");
        parse_closed_loop(w, i);
    }

    const std::string p = group + "/";
    r.T = i.n_tokens;
    r.H = i.n_head_kv;
    r.L = int64_t(ld.length(p + "layers"));
    r.S = int64_t(ld.length(p + "steps"));
    r.C = int64_t(ld.length(p + "ckpt_steps"));
    const uint64_t S = uint64_t(r.S), L = uint64_t(r.L), H = uint64_t(r.H), T = uint64_t(r.T),
                   C = uint64_t(r.C);
    r.layers = ld.read<int32_t>(p + "layers", Kind::Int, {L}, "L", H5T_NATIVE_INT32);
    r.steps = ld.read<int32_t>(p + "steps", Kind::Int, {S}, "S", H5T_NATIVE_INT32);
    const char* slh = "steps, layers, n_head_kv";
    r.recall = ld.read_floats(p + "recall", {S, L, H}, slh);
    r.out_rel_err = ld.read_floats(p + "out_rel_err", {S, L, H}, slh);
    r.out_cos = ld.read_floats(p + "out_cos", {S, L, H}, slh);
    r.held = ld.read<int32_t>(p + "held", Kind::Int, {S, L, H}, slh, H5T_NATIVE_INT32);
    r.budget_tokens =
        ld.read<int32_t>(p + "budget_tokens", Kind::Int, {S, L, H}, slh, H5T_NATIVE_INT32);
    r.bytes = ld.read<int64_t>(p + "bytes", Kind::Int, {S, L, H}, slh, H5T_NATIVE_INT64);
    r.full_bytes = ld.read<int64_t>(p + "full_bytes", Kind::Int, {S}, "steps", H5T_NATIVE_INT64);
    r.evicted_at = ld.read<int32_t>(p + "evicted_at", Kind::Int, {L, H, T},
                                    "layers, n_head_kv, n_tokens", H5T_NATIVE_INT32);
    // v3: merges (v1 / v2 files: nothing merged).
    if (version >= 3) {
        r.merged_into = ld.read<int32_t>(p + "merged_into", Kind::Int, {L, H, T},
                                         "layers, n_head_kv, n_tokens", H5T_NATIVE_INT32);
        r.merged_at = ld.read<int32_t>(p + "merged_at", Kind::Int, {L, H, T},
                                       "layers, n_head_kv, n_tokens", H5T_NATIVE_INT32);
    } else {
        r.merged_into.assign(size_t(L * H * T), -1);
        r.merged_at.assign(size_t(L * H * T), -1);
    }
    r.ckpt_steps = ld.read<int32_t>(p + "ckpt_steps", Kind::Int, {C}, "C", H5T_NATIVE_INT32);
    const char* clht = "checkpoints, layers, n_head_kv, n_tokens";
    r.ckpt_bits =
        ld.read<uint8_t>(p + "ckpt_bits", Kind::Int, {C, L, H, T}, clht, H5T_NATIVE_UINT8);
    r.ckpt_score = ld.read_floats(p + "ckpt_score", {C, L, H, T}, clht);

    // Optional (files written before it existed lack it): [E, 4].
    if (h5::link_exists(gi, "bit_events")) {
        Id d(H5Dopen2(gi, "bit_events", H5P_DEFAULT));
        if (!d.valid()) fail("{}: 'bit_events' is not a readable dataset: {}", w, h5::last_error());
        const std::vector<uint64_t> sh = h5::shape_of(d.get());
        if (sh.size() != 2 || sh[1] != 4)
            fail(
                "{}: dataset '{}bit_events' has shape {}, expected [E, 4] (unit, token, step, "
                "bits)",
                w, p, h5::shape_str(sh));
        r.bit_events = ld.read<int32_t>(p + "bit_events", Kind::Int, sh, "E, 4", H5T_NATIVE_INT32);
        r.has_bit_events = true;
        const int64_t U = r.L * r.H;
        for (size_t e = 0; e + 3 < r.bit_events.size(); e += 4) {
            const int32_t* row = r.bit_events.data() + e;
            if (row[0] < 0 || row[0] >= U || row[1] < 0 || row[1] >= r.T || row[2] < 0 ||
                row[2] >= r.T || row[3] < 0 || row[3] > 64 || (e > 0 && row[2] < row[-2]))
                fail(
                    "{}: 'bit_events' row {} is ({}, {}, {}, {}): want unit in [0, {}), token and "
                    "step in [0, {}), bits in [0, 64], steps ascending",
                    w, e / 4, row[0], row[1], row[2], row[3], U, r.T);
        }
    }

    // Values the viewer indexes with: never trust them.
    for (size_t k = 0; k < r.steps.size(); ++k)
        if (r.steps[k] < 0 || r.steps[k] >= r.T || (k > 0 && r.steps[k] <= r.steps[k - 1]))
            fail("{}: 'steps' must be ascending token indices in [0, {}); entry {} is {}", w, r.T,
                 k, r.steps[k]);
    for (size_t k = 0; k < r.ckpt_steps.size(); ++k)
        if (r.ckpt_steps[k] < 0 || r.ckpt_steps[k] >= r.T ||
            (k > 0 && r.ckpt_steps[k] <= r.ckpt_steps[k - 1]))
            fail("{}: 'ckpt_steps' must be ascending token indices in [0, {}); entry {} is {}", w,
                 r.T, k, r.ckpt_steps[k]);
    for (int32_t e : r.evicted_at)
        if (e < -1 || e > r.T) fail("{}: 'evicted_at' holds {}, outside [-1, {}]", w, e, r.T);
    for (int32_t l : r.layers)
        if (l < 0 || l > 100000) fail("{}: 'layers' holds {}", w, l);
    // A folded token names a representative in the same unit and the step it was folded at
    // (both -1 when never folded; never itself), and left the cache no later than that step.
    for (int64_t u = 0; u < r.L * r.H; ++u)
        for (int64_t j = 0; j < r.T; ++j) {
            const size_t k = size_t(u * r.T + j);
            const int32_t into = r.merged_into[k], at = r.merged_at[k], ev = r.evicted_at[k];
            if (into < -1 || into >= r.T || at < -1 || at >= r.T || (into < 0) != (at < 0) ||
                into == j || (at >= 0 && (ev < 0 || ev > at)))
                fail(
                    "{}: 'merged_into' / 'merged_at' of token {} in layer slot {}, KV head {} are "
                    "{} / {} (evicted_at {}): want both -1, or a representative in [0, {}) other "
                    "than the token and a step in [0, {}) at or after evicted_at",
                    w, j, u / r.H, u % r.H, into, at, ev, r.T, r.T);
            r.has_merges = r.has_merges || into >= 0;
        }
}

}  // namespace

ResultsFile read_results(const std::string& path) {
    std::lock_guard<std::mutex> lock(hdf5_mutex());
    h5::init();
    const std::string where = fmt::format("results '{}'", path);
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) fail("{}: no such file", where);
    if (H5Fis_hdf5(path.c_str()) <= 0)
        fail("{}: not an HDF5 file, so not a kvscope results file", where);
    Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
    if (!file.valid()) fail("{}: cannot open: {}", where, h5::last_error());
    const hid_t f = file.get();
    if (!h5::has_attr(f, "format"))
        fail("{}: not a kvscope results file (no 'format' attribute)", where);
    const std::string format = h5::read_attr_str(f, "format", where);
    if (format != kResultsFormat)
        fail("{}: not a kvscope results file (format is '{}', expected '{}')", where, format,
             kResultsFormat);
    ResultsFile out;
    out.path = path;
    out.schema_version = int(h5::read_attr_int(f, "schema_version", where));
    if (out.schema_version > kResultsSchemaVersion)
        fail("{}: schema_version {} is newer than this kvscope reads ({}); update kvscope", where,
             out.schema_version, kResultsSchemaVersion);
    if (out.schema_version < 1) fail("{}: bad schema_version {}", where, out.schema_version);
    out.kvscope_version = h5::read_attr_str(f, "kvscope_version", where);
    out.created = h5::has_attr(f, "created") ? h5::read_attr_str(f, "created", where) : "";
    out.command_line =
        h5::has_attr(f, "command_line") ? h5::read_attr_str(f, "command_line", where) : "";
    const int64_t n_runs = h5::read_attr_int(f, "n_runs", where);
    if (n_runs < 0 || n_runs > 100000) fail("{}: n_runs {} is out of range", where, n_runs);
    Loader ld{f, where};
    out.runs.resize(size_t(n_runs));
    for (int64_t k = 0; k < n_runs; ++k) {
        const std::string g = fmt::format("runs/{:04d}", k);
        if (!h5::link_exists(f, g)) fail("{}: missing group '{}' (n_runs = {})", where, g, n_runs);
        read_run(ld, f, g, out.schema_version, out.runs[size_t(k)]);
    }
    return out;
}

FileKind detect_file_kind(const std::string& path) {
    std::lock_guard<std::mutex> lock(hdf5_mutex());
    h5::init();
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) return FileKind::Missing;
    if (H5Fis_hdf5(path.c_str()) <= 0) return FileKind::NotHdf5;
    Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
    if (!file.valid()) return FileKind::NotHdf5;
    if (!h5::has_attr(file.get(), "format")) return FileKind::OtherHdf5;
    try {
        const std::string f = h5::read_attr_str(file.get(), "format", path);
        if (f == "kvscope-trace") return FileKind::Trace;
        if (f == kResultsFormat) return FileKind::Results;
    } catch (const Error&) {
    }
    return FileKind::OtherHdf5;
}

}  // namespace kvs::view
