// TraceReader (see trace_reader.h and the format in trace_schema.h).
#include "capture/trace_reader.h"

#include "engine/rope.h"

#include <cmath>
#include <filesystem>
#include <map>

#include "capture/capture.h"
#include "capture/chunk_read.h"
#include "capture/h5util.h"
#include "capture/half.h"
#include "engine/error.h"

namespace kvs::capture {

using h5::Id;

namespace {

enum class Kind { Float, Int, String };

const char* kind_name(Kind k) {
    return k == Kind::Float ? "floating-point" : k == Kind::Int ? "integer" : "string";
}

}  // namespace

struct TraceReader::Impl {
    TraceInfo info;
    std::string where;  // "trace 'path'"
    Id file, f16;
    std::map<std::string, Id> dsets;  // "layers/03/q", "tokens/ids", ...
    std::map<int, std::string> layer_group;

    // Opens dataset `path`, checks its element kind and shape; `dims` names the expected
    // dimensions for the message ("n_head, n_tokens, head_dim").
    void open_dataset(const std::string& path, Kind kind, const std::vector<uint64_t>& shape,
                      const char* dims) {
        if (!h5::link_exists(file.get(), path)) fail("{}: missing dataset '{}'", where, path);
        Id d(H5Dopen2(file.get(), path.c_str(), H5P_DEFAULT));
        if (!d.valid())
            fail("{}: '{}' is not a readable dataset: {}", where, path, h5::last_error());
        Id t(H5Dget_type(d.get()));
        const H5T_class_t c = H5Tget_class(t.get());
        const bool ok = kind == Kind::Float ? c == H5T_FLOAT
                        : kind == Kind::Int ? c == H5T_INTEGER
                                            : c == H5T_STRING;
        if (!ok) fail("{}: dataset '{}' is not {}", where, path, kind_name(kind));
        const std::vector<uint64_t> got = h5::shape_of(d.get());
        if (got != shape)
            fail("{}: dataset '{}' has shape {}, expected {} ({})", where, path, h5::shape_str(got),
                 h5::shape_str(shape), dims);
        dsets[path] = std::move(d);
    }

    hid_t dset(const std::string& path) const {
        auto it = dsets.find(path);
        KVS_ASSERT(it != dsets.end());
        return it->second.get();
    }

    // Reads the hyperslab (start, count) of `path` into `out` as memory type `mt`.
    void read_slab(const std::string& path, const std::vector<hsize_t>& start,
                   const std::vector<hsize_t>& count, hid_t mt, void* out) const {
        const hid_t d = dset(path);
        Id fspace(H5Dget_space(d));
        hsize_t n = 1;
        for (hsize_t c : count) n *= c;
        if (n == 0) return;
        H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(),
                            nullptr);
        // The memory space has the selection's shape: with a flat one HDF5 maps every element
        // to its chunk one by one (10x slower on a whole layer).
        Id mspace(H5Screate_simple(int(count.size()), count.data(), nullptr));
        if (H5Dread(d, mt, mspace.get(), fspace.get(), H5P_DEFAULT, out) < 0)
            fail("{}: cannot read '{}': {}", where, path, h5::last_error());
    }

    // Float data of any stored float type into fp32.
    std::vector<float> read_floats(const std::string& path, const std::vector<hsize_t>& start,
                                   const std::vector<hsize_t>& count) const {
        size_t n = 1;
        for (hsize_t c : count) n *= size_t(c);
        std::vector<float> out(n);
        Id ft(H5Dget_type(dset(path)));
        if (h5::is_f16(ft.get())) {
            if (read_f16_chunks(dset(path), where + ": '" + path + "'", start, count, out.data()))
                return out;
            std::vector<uint16_t> h(n);
            read_slab(path, start, count, f16.get(), h.data());
            f16_to_f32(h.data(), out.data(), n);
        } else {
            read_slab(path, start, count, H5T_NATIVE_FLOAT, out.data());
        }
        return out;
    }

    // Refuses a non-finite value in a slab of `path` laid out [rows, n, d] (rows from head0):
    // attention over NaN / inf silently gives NaN metrics, so a corrupt trace is an error.
    void check_finite(const std::vector<float>& v, const std::string& path, int head0, int64_t t0,
                      int64_t n, int64_t d) const {
        // Fast path: the sum of x * 0 is 0 unless some x is NaN or inf.
        float probe = 0;
        for (float x : v) probe += x * 0.0f;
        if (probe == 0.0f) return;
        for (size_t i = 0; i < v.size(); ++i) {
            if (std::isfinite(v[i])) continue;
            const int64_t row = int64_t(i) / (n * d), t = (int64_t(i) / d) % n, k = int64_t(i) % d;
            const char* what = std::isnan(v[i]) ? "NaN" : v[i] > 0 ? "+inf" : "-inf";
            if (d == 1)
                fail(
                    "{}: '{}' holds {} at head {}, token {}: the trace is corrupt (non-finite "
                    "values are refused)",
                    where, path, what, head0 + row, t0 + t);
            fail(
                "{}: '{}' holds {} at head {}, token {}, element {}: the trace is corrupt "
                "(non-finite values are refused)",
                where, path, what, head0 + row, t0 + t, k);
        }
    }

    void check_range(int64_t& t0, int64_t& t1) const {
        if (t1 < 0) t1 = info.n_tokens;
        if (t0 < 0 || t0 > t1 || t1 > info.n_tokens)
            fail("{}: token range [{}, {}) outside [0, {})", where, t0, t1, info.n_tokens);
    }

    template <class T>
    std::vector<T> read_tokens(const char* path, int64_t t0, int64_t t1, hid_t mt,
                               int width) const {
        check_range(t0, t1);
        std::vector<T> out(size_t(t1 - t0) * size_t(width));
        std::vector<hsize_t> start = {hsize_t(t0)}, count = {hsize_t(t1 - t0)};
        if (width > 1) {
            start.push_back(0);
            count.push_back(hsize_t(width));
        }
        read_slab(path, start, count, mt, out.data());
        return out;
    }

    void validate();
};

void TraceReader::Impl::validate() {
    h5::init();
    const std::string& path = info.path;
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) fail("{}: no such file", where);
    info.file_bytes = std::filesystem::file_size(path, ec);
    if (H5Fis_hdf5(path.c_str()) <= 0) fail("{}: not an HDF5 file, so not a kvscope trace", where);
    file = Id(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
    if (!file.valid()) fail("{}: cannot open: {}", where, h5::last_error());
    f16 = h5::f16_type();
    const hid_t f = file.get();

    if (!h5::has_attr(f, "format")) fail("{}: not a kvscope trace (no 'format' attribute)", where);
    const std::string format = h5::read_attr_str(f, "format", where);
    if (format != kFormatName)
        fail("{}: not a kvscope trace (format is '{}', expected '{}')", where, format, kFormatName);
    info.schema_version = int(h5::read_attr_int(f, "schema_version", where));
    if (info.schema_version > kSchemaVersion)
        fail("{}: schema_version {} is newer than this kvscope reads ({}); update kvscope", where,
             info.schema_version, kSchemaVersion);
    if (info.schema_version < 1) fail("{}: bad schema_version {}", where, info.schema_version);

    auto str = [&](const char* n) { return h5::read_attr_str(f, n, where); };
    auto num = [&](const char* n) { return h5::read_attr_int(f, n, where); };
    auto flt = [&](const char* n) { return h5::read_attr_float(f, n, where); };
    auto bounded = [&](const char* n, int64_t lo, int64_t hi) {
        const int64_t v = num(n);
        if (v < lo || v > hi)
            fail("{}: attribute '{}' = {} is outside [{}, {}]", where, n, v, lo, hi);
        return v;
    };
    info.kvscope_version = str("kvscope_version");
    info.model_name = str("model_name");
    info.model_arch = str("model_arch");
    info.model_path = str("model_path");
    info.n_layer = int(bounded("n_layer", 1, 100000));
    info.n_head = int(bounded("n_head", 1, 100000));
    info.n_head_kv = int(bounded("n_head_kv", 1, info.n_head));
    info.head_dim = int(bounded("head_dim", 1, 100000));
    if (info.n_head % info.n_head_kv != 0)
        fail("{}: n_head {} is not a multiple of n_head_kv {}", where, info.n_head, info.n_head_kv);
    for (int64_t l : h5::read_attr_ints(f, "layers", where)) {
        if (l < 0 || l >= info.n_layer || (!info.layers.empty() && l <= info.layers.back()))
            fail("{}: attribute 'layers' must list layers of [0, {}) in ascending order", where,
                 info.n_layer);
        info.layers.push_back(int(l));
    }
    info.rope_theta = flt("rope_theta");
    info.rope_scaling.type = str("rope_scaling_type");
    info.rope_scaling.factor = float(flt("rope_scaling_factor"));
    info.rope_scaling.low_freq_factor = float(flt("rope_scaling_low_freq_factor"));
    info.rope_scaling.high_freq_factor = float(flt("rope_scaling_high_freq_factor"));
    info.rope_scaling.original_context = int(num("rope_scaling_original_context"));
    // Schema 2: which logits rows the trace holds (absent in schema 1: every row, with top-k).
    info.logits = info.schema_version >= 2 ? str("logits") : "topk";
    if (LogitsMode m; !logits_mode_from_name(info.logits, &m))
        fail("{}: logits '{}' is not one of topk, lse, none", where, info.logits);
    info.rope_pairing = str("rope_pairing");
    if (info.rope_pairing != "interleaved" && info.rope_pairing != "half")
        fail("{}: rope_pairing '{}' is neither 'interleaved' nor 'half'", where, info.rope_pairing);
    if (h5::has_attr(f, "rope_inv_freq")) {
        const std::vector<double> fr = h5::read_attr_floats(f, "rope_inv_freq", where);
        if (int(fr.size()) != info.head_dim / 2)
            fail("{}: attribute 'rope_inv_freq' holds {} frequencies, head_dim {} needs {}", where,
                 fr.size(), info.head_dim, info.head_dim / 2);
        for (double x : fr) {
            if (!std::isfinite(x) || x < 0)
                fail("{}: attribute 'rope_inv_freq' holds {}, not a frequency", where, x);
            info.rope_inv_freq.push_back(float(x));
        }
    } else {
        ModelConfig c;
        c.head_dim = info.head_dim;
        c.rope_theta = float(info.rope_theta);
        c.rope_scaling = info.rope_scaling;
        info.rope_inv_freq = rope_inv_freq(c);  // empty for an unknown scaling type
    }
    info.attn_scale = flt("attn_scale");
    const std::string dtype = str("dtype");
    if (dtype != "f16" && dtype != "f32")
        fail("{}: dtype '{}' is neither f16 nor f32", where, dtype);
    info.dtype = dtype == "f16" ? StorageDtype::F16 : StorageDtype::F32;
    info.compression = str("compression");
    info.n_tokens = bounded("n_tokens", 0, int64_t(1) << 31);
    info.prompt_len = bounded("prompt_len", 0, info.n_tokens);
    info.created = str("created");
    info.command_line = str("command_line");
    info.complete = h5::read_attr_bool(f, "complete", where);
    info.config_json = str("config_json");

    const uint64_t T = uint64_t(info.n_tokens), H = uint64_t(info.n_head),
                   HK = uint64_t(info.n_head_kv), D = uint64_t(info.head_dim);
    open_dataset("kv_head_of_q_head", Kind::Int, {H}, "n_head");
    info.kv_head_of_q_head.resize(H);
    read_slab("kv_head_of_q_head", {0}, {H}, H5T_NATIVE_INT32, info.kv_head_of_q_head.data());
    for (int32_t g : info.kv_head_of_q_head)
        if (g < 0 || g >= info.n_head_kv)
            fail("{}: kv_head_of_q_head holds {}, outside [0, {})", where, g, info.n_head_kv);

    open_dataset("tokens/ids", Kind::Int, {T}, "n_tokens");
    open_dataset("tokens/positions", Kind::Int, {T}, "n_tokens");
    open_dataset("tokens/text", Kind::String, {T}, "n_tokens");
    open_dataset("tokens/logprob", Kind::Float, {T}, "n_tokens");
    open_dataset("tokens/logits_lse", Kind::Float, {T}, "n_tokens");
    open_dataset("tokens/topk_ids", Kind::Int, {T, uint64_t(kTopK)}, "n_tokens, 16");
    open_dataset("tokens/topk_logits", Kind::Float, {T, uint64_t(kTopK)}, "n_tokens, 16");

    const int w = std::max(2, int(std::to_string(std::max(info.n_layer - 1, 0)).size()));
    for (int l : info.layers) {
        const std::string g = fmt::format("layers/{:0{}d}", l, w);
        layer_group[l] = g;
        open_dataset(g + "/q", Kind::Float, {H, T, D}, "n_head, n_tokens, head_dim");
        open_dataset(g + "/k", Kind::Float, {HK, T, D}, "n_head_kv, n_tokens, head_dim");
        open_dataset(g + "/v", Kind::Float, {HK, T, D}, "n_head_kv, n_tokens, head_dim");
        open_dataset(g + "/o", Kind::Float, {H, T, D}, "n_head, n_tokens, head_dim");
        open_dataset(g + "/lse", Kind::Float, {H, T}, "n_head, n_tokens");
    }

    if (!h5::link_exists(f, "task")) fail("{}: missing group 'task'", where);
    Id g(H5Gopen2(f, "task", H5P_DEFAULT));
    if (!g.valid()) fail("{}: 'task' is not a group", where);
    const std::string tw = where + " task/";
    TaskRecord& t = info.task;
    t.kind = h5::read_attr_str(g.get(), "kind", tw);
    if (t.kind != "text" && t.kind != "prompt" && t.kind != "passkey" && t.kind != "needle")
        fail("{}: task kind '{}' is not text, prompt, passkey or needle", where, t.kind);
    if (t.has_answer()) {
        t.answer = h5::read_attr_str(g.get(), "answer", tw);
        t.depth = h5::read_attr_float(g.get(), "depth", tw);
        t.seed = h5::read_attr_int(g.get(), "seed", tw);
        t.needle = h5::read_attr_str(g.get(), "needle", tw);
        if (t.kind == "needle") t.needle_key = h5::read_attr_str(g.get(), "needle_key", tw);
        t.generated = h5::read_attr_str(g.get(), "generated", tw);
        t.correct = h5::read_attr_bool(g.get(), "correct", tw);
        if (!h5::link_exists(f, "task/answer_positions"))
            fail("{}: missing dataset 'task/answer_positions'", where);
        Id d(H5Dopen2(f, "task/answer_positions", H5P_DEFAULT));
        const std::vector<uint64_t> s = h5::shape_of(d.get());
        if (s.size() != 1 || s[0] > T) fail("{}: 'task/answer_positions' has a bad shape", where);
        open_dataset("task/answer_positions", Kind::Int, s, "n");
        t.answer_positions.resize(size_t(s[0]));
        read_slab("task/answer_positions", {0}, {s[0]}, H5T_NATIVE_INT32,
                  t.answer_positions.data());
        open_dataset("task/needle_range", Kind::Int, {2}, "2");
        int32_t r[2] = {0, 0};
        read_slab("task/needle_range", {0}, {2}, H5T_NATIVE_INT32, r);
        t.needle_begin = r[0];
        t.needle_end = r[1];
    }
}

TraceReader::TraceReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
    impl_->info.path = path;
    impl_->where = fmt::format("trace '{}'", path);
    impl_->validate();
}

TraceReader::~TraceReader() = default;
TraceReader::TraceReader(TraceReader&&) noexcept = default;
TraceReader& TraceReader::operator=(TraceReader&&) noexcept = default;

const TraceInfo& TraceReader::info() const {
    return impl_->info;
}

bool TraceReader::has_layer(int layer) const {
    return impl_->layer_group.count(layer) > 0;
}

std::vector<float> TraceReader::read_heads(Field f, int layer, int64_t t0, int64_t t1) const {
    const Impl& I = *impl_;
    I.check_range(t0, t1);
    auto it = I.layer_group.find(layer);
    if (it == I.layer_group.end()) fail("{}: layer {} was not captured", I.where, layer);
    const hsize_t rows = hsize_t(field_is_kv(f) ? I.info.n_head_kv : I.info.n_head);
    const std::string path = it->second + "/" + field_name(f);
    std::vector<float> out = I.read_floats(path, {0, hsize_t(t0), 0},
                                           {rows, hsize_t(t1 - t0), hsize_t(I.info.head_dim)});
    I.check_finite(out, path, 0, t0, t1 - t0, I.info.head_dim);
    return out;
}

std::vector<float> TraceReader::read(Field f, int layer, int head, int64_t t0, int64_t t1) const {
    const Impl& I = *impl_;
    I.check_range(t0, t1);
    auto it = I.layer_group.find(layer);
    if (it == I.layer_group.end()) fail("{}: layer {} was not captured", I.where, layer);
    const int rows = field_is_kv(f) ? I.info.n_head_kv : I.info.n_head;
    if (head < 0 || head >= rows)
        fail("{}: head {} of '{}' outside [0, {})", I.where, head, field_name(f), rows);
    const std::string path = it->second + "/" + field_name(f);
    std::vector<float> out = I.read_floats(path, {hsize_t(head), hsize_t(t0), 0},
                                           {1, hsize_t(t1 - t0), hsize_t(I.info.head_dim)});
    I.check_finite(out, path, head, t0, t1 - t0, I.info.head_dim);
    return out;
}

std::vector<float> TraceReader::read_lse(int layer, int head, int64_t t0, int64_t t1) const {
    const Impl& I = *impl_;
    I.check_range(t0, t1);
    auto it = I.layer_group.find(layer);
    if (it == I.layer_group.end()) fail("{}: layer {} was not captured", I.where, layer);
    if (head < 0 || head >= I.info.n_head)
        fail("{}: head {} of 'lse' outside [0, {})", I.where, head, I.info.n_head);
    const std::string path = it->second + "/lse";
    std::vector<float> out =
        I.read_floats(path, {hsize_t(head), hsize_t(t0)}, {1, hsize_t(t1 - t0)});
    I.check_finite(out, path, head, t0, t1 - t0, 1);
    return out;
}

std::vector<int32_t> TraceReader::token_ids(int64_t t0, int64_t t1) const {
    return impl_->read_tokens<int32_t>("tokens/ids", t0, t1, H5T_NATIVE_INT32, 1);
}
std::vector<int32_t> TraceReader::positions(int64_t t0, int64_t t1) const {
    return impl_->read_tokens<int32_t>("tokens/positions", t0, t1, H5T_NATIVE_INT32, 1);
}
std::vector<double> TraceReader::logprob(int64_t t0, int64_t t1) const {
    return impl_->read_tokens<double>("tokens/logprob", t0, t1, H5T_NATIVE_DOUBLE, 1);
}
std::vector<float> TraceReader::logits_lse(int64_t t0, int64_t t1) const {
    return impl_->read_tokens<float>("tokens/logits_lse", t0, t1, H5T_NATIVE_FLOAT, 1);
}
std::vector<int32_t> TraceReader::topk_ids(int64_t t0, int64_t t1) const {
    return impl_->read_tokens<int32_t>("tokens/topk_ids", t0, t1, H5T_NATIVE_INT32, kTopK);
}
std::vector<float> TraceReader::topk_logits(int64_t t0, int64_t t1) const {
    return impl_->read_tokens<float>("tokens/topk_logits", t0, t1, H5T_NATIVE_FLOAT, kTopK);
}

std::vector<std::string> TraceReader::token_text(int64_t t0, int64_t t1) const {
    const Impl& I = *impl_;
    I.check_range(t0, t1);
    const hid_t d = I.dset("tokens/text");
    Id ft(H5Dget_type(d));
    const hsize_t n = hsize_t(t1 - t0);
    std::vector<std::string> out;
    if (n == 0) return out;
    Id fspace(H5Dget_space(d));
    const hsize_t start = hsize_t(t0);
    H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, &start, nullptr, &n, nullptr);
    Id mspace(H5Screate_simple(1, &n, nullptr));
    Id mt(H5Tcopy(H5T_C_S1));
    H5Tset_cset(mt.get(), H5Tget_cset(ft.get()));
    if (H5Tis_variable_str(ft.get()) > 0) {
        H5Tset_size(mt.get(), H5T_VARIABLE);
        std::vector<char*> p(n, nullptr);
        if (H5Dread(d, mt.get(), mspace.get(), fspace.get(), H5P_DEFAULT, p.data()) < 0)
            fail("{}: cannot read 'tokens/text': {}", I.where, h5::last_error());
        for (char* s : p) out.emplace_back(s ? s : "");
        H5Dvlen_reclaim(mt.get(), mspace.get(), H5P_DEFAULT, p.data());
    } else {
        const size_t w = H5Tget_size(ft.get());
        H5Tset_size(mt.get(), w);
        std::string buf(size_t(n) * w, '\0');
        if (H5Dread(d, mt.get(), mspace.get(), fspace.get(), H5P_DEFAULT, buf.data()) < 0)
            fail("{}: cannot read 'tokens/text': {}", I.where, h5::last_error());
        for (size_t i = 0; i < n; ++i) {
            std::string s = buf.substr(i * w, w);
            s.resize(std::min(s.size(), s.find('\0')));
            out.push_back(std::move(s));
        }
    }
    return out;
}

}  // namespace kvs::capture
