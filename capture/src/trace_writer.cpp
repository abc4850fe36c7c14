// TraceWriter (see trace_writer.h and the format in trace_schema.h).
//
// Every growing dataset is a Stream: logically [rows, T, width] (rows = heads or 1, width = d,
// kTopK or 1), stored in HDF5 with the unit dimensions dropped. Rows arrive into a staging
// buffer laid out [rows, cap, width]; when at least `flush_tokens` tokens are staged, the
// largest multiple of it is appended (so appends start on chunk boundaries of q/k/v/o and fill
// whole chunks, which HDF5 compresses and writes straight through without caching them).
// With the default gzip:1, q/k/v/o chunks are encoded here in parallel (chunk_deflate.h: stored
// mantissa planes, Huffman-coded top plane) and written with H5Dwrite_chunk.
#include "capture/trace_writer.h"

#include "engine/rope.h"

#include <hdf5_hl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "capture/capture.h"
#include "capture/chunk_deflate.h"
#include "capture/h5util.h"
#include "capture/half.h"
#include "engine/error.h"

#ifndef KVS_VERSION
#define KVS_VERSION "unknown"
#endif

namespace kvs::capture {

namespace {

using h5::Id;

int64_t floor_pow2(int64_t x) {
    int64_t p = 1;
    while (p * 2 <= x) p *= 2;
    return p;
}

std::string iso_utc_now() {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

// One growing dataset and its staging buffer.
struct Stream {
    std::string name;  // path in the file, for messages
    Id dset;
    int rows = 1, width = 1;
    bool has_rows = false, has_width = false;  // dimensions kept in the file
    bool direct = false;  // chunks encoded here (deflate_chunk) and written with H5Dwrite_chunk
    int64_t chunk = 0;    // chunk length along T
    size_t elt = 4;       // bytes per element in memory
    hid_t mem_type = -1;  // borrowed (native type or the writer's f16)
    int64_t written = 0;  // tokens in the file
    int64_t staged = 0;   // tokens in `stage`
    int64_t cap = 0;      // staging capacity in tokens
    std::vector<uint8_t> stage;  // [rows, cap, width] elements

    uint8_t* at(int r, int64_t t) {
        return stage.data() + ((size_t(r) * size_t(cap) + size_t(t)) * size_t(width)) * elt;
    }
    void reserve(int64_t n) {
        if (n <= cap) return;
        const int64_t nc = std::max(n, cap * 2);
        std::vector<uint8_t> ns(size_t(rows) * size_t(nc) * size_t(width) * elt);
        for (int r = 0; r < rows; ++r)
            if (staged > 0)
                std::memcpy(ns.data() + size_t(r) * size_t(nc) * size_t(width) * elt, at(r, 0),
                            size_t(staged) * size_t(width) * elt);
        stage.swap(ns);
        cap = nc;
    }
    // File dims with T = n.
    std::vector<hsize_t> dims(int64_t n) const {
        std::vector<hsize_t> d;
        if (has_rows) d.push_back(hsize_t(rows));
        d.push_back(hsize_t(n));
        if (has_width) d.push_back(hsize_t(width));
        return d;
    }
};

}  // namespace

struct TraceWriter::Impl {
    std::string path, partial;
    TraceMeta meta;
    Id file, f16, str;              // the file; the memory types streams borrow
    std::vector<Stream> streams;    // layer streams first, then token streams
    std::vector<int> layer_stream;  // model layer -> index of its q stream (or -1)
    std::vector<int64_t> layer_staged;
    size_t tok_first = 0;  // index of the first token stream
    int64_t flush_tokens = 256, tok_staged = 0;
    int chunk_qkvo = 0, text_width = 64;
    std::vector<std::vector<uint8_t>> out_pool;  // encoded chunks, reused by write_direct
    int64_t prompt_len = 0, final_tokens = 0;
    TaskRecord task;
    bool closed = false;
    double seconds = 0;

    [[noreturn]] void write_fail(const std::string& what) const {
        const std::string e = h5::last_error();
        fail("writing trace '{}': {}{}{}", partial, what, e.empty() ? "" : ": ", e);
    }

    Id make_group(hid_t loc, const std::string& name) {
        Id g(H5Gcreate2(loc, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
        if (!g.valid()) write_fail("cannot create group '" + name + "'");
        return g;
    }

    // Creates a Stream's dataset: extendible along T, chunked with `chunk_t` tokens per chunk.
    void add_stream(hid_t loc, const std::string& name, const std::string& full, int rows,
                    bool has_rows, int width, bool has_width, hid_t file_type, hid_t mem_type,
                    size_t elt, int64_t chunk_t, bool cache_chunks,
                    std::vector<const char*> labels) {
        Stream s;
        s.name = full;
        s.rows = rows;
        s.width = width;
        s.has_rows = has_rows;
        s.has_width = has_width;
        s.elt = elt;
        s.mem_type = mem_type;
        s.chunk = chunk_t;
        // gzip:1 on the big float tensors: our own shuffle + deflate encoding (chunk_deflate.h),
        // readable by any HDF5; other levels go through HDF5's deflate filter (zlib's LZ77).
        s.direct = meta.gzip_level == 1 && !cache_chunks;
        const std::vector<hsize_t> d0 = s.dims(0);
        std::vector<hsize_t> maxd = d0, chunk = d0;
        const size_t t_axis = has_rows ? 1 : 0;
        maxd[t_axis] = H5S_UNLIMITED;
        chunk[t_axis] = hsize_t(chunk_t);
        Id space(H5Screate_simple(int(d0.size()), d0.data(), maxd.data()));
        Id dcpl(H5Pcreate(H5P_DATASET_CREATE));
        H5Pset_chunk(dcpl.get(), int(chunk.size()), chunk.data());
        if (meta.gzip_level > 0) {
            H5Pset_shuffle(dcpl.get());
            H5Pset_deflate(dcpl.get(), unsigned(meta.gzip_level));
        }
        // Full-chunk appends need no chunk cache: without one, memory does not grow with the
        // number of datasets. Small streams appended in pieces keep the default cache (1 MiB).
        Id dapl(H5Pcreate(H5P_DATASET_ACCESS));
        if (!cache_chunks) H5Pset_chunk_cache(dapl.get(), 1, 0, 1.0);
        s.dset = Id(H5Dcreate2(loc, name.c_str(), file_type, space.get(), H5P_DEFAULT, dcpl.get(),
                               dapl.get()));
        if (!s.dset.valid()) write_fail("cannot create dataset '" + full + "'");
        for (size_t i = 0; i < labels.size(); ++i)
            H5DSset_label(s.dset.get(), unsigned(i), labels[i]);
        streams.push_back(std::move(s));
    }

    void create() {
        h5::init();
        const ModelConfig& c = meta.model;
        KVS_ASSERT(c.n_layer > 0 && c.n_head > 0 && c.n_head_kv > 0 && c.head_dim > 0);
        KVS_ASSERT(c.n_head % c.n_head_kv == 0);
        if (meta.layers.empty())
            for (int l = 0; l < c.n_layer; ++l) meta.layers.push_back(l);
        for (int l : meta.layers) KVS_ASSERT(l >= 0 && l < c.n_layer);
        if (meta.writer_version.empty()) meta.writer_version = KVS_VERSION;
        std::error_code ec;
        std::filesystem::remove(partial, ec);
        Id fapl(H5Pcreate(H5P_FILE_ACCESS));
        H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG);
        // The HDF5 1.10 file format: every piece of metadata (superblock, object headers, chunk
        // indexes, heaps) carries a checksum, so a damaged file is an error, not a crash of the
        // reader. Readable by HDF5 >= 1.10 (h5py included).
        H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V110, H5F_LIBVER_V110);
        file = Id(H5Fcreate(partial.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()));
        if (!file.valid()) write_fail("cannot create the file");
        f16 = h5::f16_type();
        const hid_t f = file.get();
        const std::string& p = partial;

        // Root attributes.
        h5::write_attr(f, "format", kFormatName, p);
        h5::write_attr(f, "schema_version", int64_t(kSchemaVersion), p);
        h5::write_attr(f, "kvscope_version", meta.writer_version, p);
        h5::write_attr(f, "model_name", c.name, p);
        h5::write_attr(f, "model_arch", c.arch, p);
        h5::write_attr(f, "model_path", meta.model_path, p);
        h5::write_attr(f, "n_layer", int64_t(c.n_layer), p);
        h5::write_attr(f, "n_head", int64_t(c.n_head), p);
        h5::write_attr(f, "n_head_kv", int64_t(c.n_head_kv), p);
        h5::write_attr(f, "head_dim", int64_t(c.head_dim), p);
        h5::write_attr(f, "layers", std::vector<int32_t>(meta.layers.begin(), meta.layers.end()),
                       p);
        h5::write_attr(f, "rope_theta", double(c.rope_theta), p);
        h5::write_attr(f, "rope_scaling_type", c.rope_scaling.type, p);
        h5::write_attr(f, "rope_scaling_factor", double(c.rope_scaling.factor), p);
        h5::write_attr(f, "rope_scaling_low_freq_factor", double(c.rope_scaling.low_freq_factor),
                       p);
        h5::write_attr(f, "rope_scaling_high_freq_factor", double(c.rope_scaling.high_freq_factor),
                       p);
        h5::write_attr(f, "rope_scaling_original_context", int64_t(c.rope_scaling.original_context),
                       p);
        h5::write_attr(f, "rope_pairing", rope_pairing_name(c.rope_pairing), p);
        {
            const std::vector<float> fr =
                meta.rope_inv_freq.empty() ? rope_inv_freq(c) : meta.rope_inv_freq;
            if (int(fr.size()) != c.head_dim / 2)
                fail("trace rope_inv_freq: {} frequencies for head_dim {} (expected {})", fr.size(),
                     c.head_dim, c.head_dim / 2);
            h5::write_attr(f, "rope_inv_freq", std::vector<double>(fr.begin(), fr.end()), p);
        }
        if (LogitsMode m; !logits_mode_from_name(meta.logits, &m))
            fail("trace logits '{}' is not one of topk, lse, none", meta.logits);
        h5::write_attr(f, "logits", meta.logits, p);
        h5::write_attr(f, "attn_scale", 1.0 / std::sqrt(double(c.head_dim)), p);
        h5::write_attr(f, "dtype", dtype_name(meta.dtype), p);
        h5::write_attr(f, "compression", compression_name(meta.gzip_level), p);
        h5::write_attr(f, "prompt_len", int64_t(0), p);
        h5::write_attr(f, "n_tokens", int64_t(0), p);
        h5::write_attr(f, "created", iso_utc_now(), p);
        h5::write_attr(f, "command_line", meta.command_line, p);
        h5::write_attr_bool(f, "complete", false, p);
        h5::write_attr(f, "config_json", meta.config_json, p);

        {  // kv_head_of_q_head
            const hsize_t n = hsize_t(c.n_head);
            std::vector<int32_t> map(n);
            for (int h = 0; h < c.n_head; ++h) map[size_t(h)] = h / (c.n_head / c.n_head_kv);
            Id space(H5Screate_simple(1, &n, nullptr));
            Id d(H5Dcreate2(f, "kv_head_of_q_head", H5T_STD_I32LE, space.get(), H5P_DEFAULT,
                            H5P_DEFAULT, H5P_DEFAULT));
            if (!d.valid() ||
                H5Dwrite(d.get(), H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, map.data()) < 0)
                write_fail("cannot write 'kv_head_of_q_head'");
            H5DSset_label(d.get(), 0, "head");
        }

        // Chunking: q/k/v/o chunks hold a power-of-two number of tokens with the q chunk at most
        // 512 KiB (k/v chunks are n_head / n_head_kv times smaller); small per-token streams get
        // longer chunks (>= 64 KiB, at most 16384 tokens) filled over several appends.
        const bool half = meta.dtype == StorageDtype::F16;
        const size_t e = half ? 2 : 4;
        text_width = meta.text_width > 0 ? meta.text_width : 64;
        const int64_t q_tok_bytes = int64_t(c.n_head) * c.head_dim * int64_t(e);
        chunk_qkvo = int(std::clamp<int64_t>(floor_pow2((512 << 10) / q_tok_bytes), 16, 4096));
        if (meta.chunk_tokens > 0) chunk_qkvo = int(floor_pow2(meta.chunk_tokens));
        flush_tokens = chunk_qkvo;
        auto long_chunk = [&](int64_t tok_bytes) {
            int64_t ct = chunk_qkvo;
            while (ct * tok_bytes < (64 << 10) && ct < 16384) ct *= 2;
            return ct;
        };
        const hid_t vt = half ? f16.get() : H5T_IEEE_F32LE;
        const hid_t vm = half ? f16.get() : H5T_NATIVE_FLOAT;
        const int w = int(std::to_string(std::max(c.n_layer - 1, 0)).size());
        Id layers = make_group(f, "layers");
        layer_stream.assign(size_t(c.n_layer), -1);
        layer_staged.assign(size_t(c.n_layer), 0);
        for (int l : meta.layers) {
            const std::string gname = fmt::format("{:0{}d}", l, std::max(2, w));
            Id g = make_group(layers.get(), gname);
            const std::string pre = "layers/" + gname + "/";
            layer_stream[size_t(l)] = int(streams.size());
            add_stream(g.get(), "q", pre + "q", c.n_head, true, c.head_dim, true, vt, vm, e,
                       chunk_qkvo, false, {"head", "token", "dim"});
            add_stream(g.get(), "k", pre + "k", c.n_head_kv, true, c.head_dim, true, vt, vm, e,
                       chunk_qkvo, false, {"kv_head", "token", "dim"});
            add_stream(g.get(), "v", pre + "v", c.n_head_kv, true, c.head_dim, true, vt, vm, e,
                       chunk_qkvo, false, {"kv_head", "token", "dim"});
            add_stream(g.get(), "o", pre + "o", c.n_head, true, c.head_dim, true, vt, vm, e,
                       chunk_qkvo, false, {"head", "token", "dim"});
            add_stream(g.get(), "lse", pre + "lse", c.n_head, true, 1, false, H5T_IEEE_F32LE,
                       H5T_NATIVE_FLOAT, 4, long_chunk(int64_t(c.n_head) * 4), true,
                       {"head", "token"});
        }
        tok_first = streams.size();
        Id tg = make_group(f, "tokens");
        const hid_t t = tg.get();
        add_stream(t, "ids", "tokens/ids", 1, false, 1, false, H5T_STD_I32LE, H5T_NATIVE_INT32, 4,
                   long_chunk(4), true, {"token"});
        add_stream(t, "positions", "tokens/positions", 1, false, 1, false, H5T_STD_I32LE,
                   H5T_NATIVE_INT32, 4, long_chunk(4), true, {"token"});
        str = h5::fixed_str_type(size_t(text_width));
        add_stream(t, "text", "tokens/text", 1, false, 1, false, str.get(), str.get(),
                   size_t(text_width), long_chunk(16), true, {"token"});
        add_stream(t, "logprob", "tokens/logprob", 1, false, 1, false, H5T_IEEE_F64LE,
                   H5T_NATIVE_DOUBLE, 8, long_chunk(8), true, {"token"});
        add_stream(t, "logits_lse", "tokens/logits_lse", 1, false, 1, false, H5T_IEEE_F32LE,
                   H5T_NATIVE_FLOAT, 4, long_chunk(4), true, {"token"});
        add_stream(t, "topk_ids", "tokens/topk_ids", 1, false, kTopK, true, H5T_STD_I32LE,
                   H5T_NATIVE_INT32, 4, long_chunk(4 * kTopK), true, {"token", "rank"});
        add_stream(t, "topk_logits", "tokens/topk_logits", 1, false, kTopK, true, H5T_IEEE_F32LE,
                   H5T_NATIVE_FLOAT, 4, long_chunk(4 * kTopK), true, {"token", "rank"});
    }

    // Drops the first n staged tokens of s (now in the file), moving the rest to the front.
    static void consume(Stream& s, int64_t n) {
        const int64_t rest = s.staged - n;
        if (rest > 0)
            for (int r = 0; r < s.rows; ++r)
                std::memmove(s.at(r, 0), s.at(r, n), size_t(rest) * size_t(s.width) * s.elt);
        s.written += n;
        s.staged -= n;
    }

    void extend(Stream& s, int64_t n) {
        const std::vector<hsize_t> newd = s.dims(s.written + n);
        if (H5Dset_extent(s.dset.get(), newd.data()) < 0)
            write_fail("cannot extend '" + s.name + "'");
    }

    // Appends the first n staged tokens of s through HDF5's filter pipeline.
    void write_stream(Stream& s, int64_t n) {
        if (n <= 0) return;
        extend(s, n);
        Id fspace(H5Dget_space(s.dset.get()));
        std::vector<hsize_t> start = s.dims(s.written), count = s.dims(n);
        std::fill(start.begin(), start.end(), 0);
        start[s.has_rows ? 1 : 0] = hsize_t(s.written);
        H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(),
                            nullptr);
        // Memory: [rows, cap, width]; select [rows, n, width].
        const hsize_t mdims[3] = {hsize_t(s.rows), hsize_t(s.cap), hsize_t(s.width)};
        const hsize_t mstart[3] = {0, 0, 0},
                      mcount[3] = {hsize_t(s.rows), hsize_t(n), hsize_t(s.width)};
        Id mspace(H5Screate_simple(3, mdims, nullptr));
        H5Sselect_hyperslab(mspace.get(), H5S_SELECT_SET, mstart, nullptr, mcount, nullptr);
        const herr_t rc = H5Dwrite(s.dset.get(), s.mem_type, mspace.get(), fspace.get(),
                                   H5P_DEFAULT, s.stage.data());
        if (rc < 0) write_fail("cannot write '" + s.name + "'");
        consume(s, n);
    }

    // Appends the first n staged tokens of every direct stream: chunks are assembled and encoded
    // in parallel (OpenMP), then written in order. Appends start on a chunk boundary; only the
    // last append (finish) may end with a partial chunk, zero-padded as HDF5 expects.
    void write_direct(int64_t n) {
        struct Job {
            Stream* s;
            int64_t t0, nt;
            std::vector<uint8_t> out;
        };
        std::vector<Job> jobs;
        for (Stream& s : streams) {
            if (!s.direct) continue;
            KVS_ASSERT(s.written % s.chunk == 0);
            for (int64_t t = 0; t < n; t += s.chunk)
                jobs.push_back({&s, t, std::min(s.chunk, n - t), {}});
        }
        if (jobs.empty()) return;
        // Output buffers are kept from one flush to the next (no page faults on fresh memory).
        if (out_pool.size() < jobs.size()) out_pool.resize(jobs.size());
        for (size_t j = 0; j < jobs.size(); ++j) jobs[j].out.swap(out_pool[j]);
#pragma omp parallel
        {
            std::vector<uint8_t> buf, planes;
#pragma omp for schedule(dynamic)
            for (size_t j = 0; j < jobs.size(); ++j) {
                Job& jb = jobs[j];
                const Stream& s = *jb.s;
                const size_t row = size_t(s.chunk) * size_t(s.width) * s.elt;
                const size_t used = size_t(jb.nt) * size_t(s.width) * s.elt;
                buf.resize(size_t(s.rows) * row);
                for (int r = 0; r < s.rows; ++r) {
                    uint8_t* dst = buf.data() + size_t(r) * row;
                    std::memcpy(
                        dst,
                        s.stage.data() +
                            ((size_t(r) * size_t(s.cap) + size_t(jb.t0)) * size_t(s.width)) * s.elt,
                        used);
                    std::memset(dst + used, 0, row - used);  // a last, partial chunk: padding
                }
                deflate_chunk(buf.data(), buf.size() / s.elt, s.elt, planes, jb.out);
            }
        }
        for (Stream& s : streams)
            if (s.direct) extend(s, n);
        for (const Job& jb : jobs) {
            const hsize_t off[3] = {0, hsize_t(jb.s->written + jb.t0), 0};
            if (H5Dwrite_chunk(jb.s->dset.get(), H5P_DEFAULT, 0, off, jb.out.size(),
                               jb.out.data()) < 0)
                write_fail("cannot write a chunk of '" + jb.s->name + "'");
        }
        for (Stream& s : streams)
            if (s.direct) consume(s, n);
        for (size_t j = 0; j < jobs.size(); ++j) jobs[j].out.swap(out_pool[j]);
    }

    // Writes staged tokens: whole multiples of flush_tokens, or everything when `all`.
    void flush(bool all) {
        const int64_t n = all ? tok_staged : tok_staged / flush_tokens * flush_tokens;
        if (n == 0) return;
        write_direct(n);
        for (Stream& s : streams)
            if (!s.direct) write_stream(s, n);
        for (int l : meta.layers) layer_staged[size_t(l)] -= n;
        tok_staged -= n;
        h5::write_attr(file.get(), "n_tokens", streams[tok_first].written, partial);
    }

    // The last token has no next token in the trace: its logprob is NaN (an interrupted capture
    // stops before the next input token, whose log-probability the last row holds until now).
    void end_logprob() {
        Stream& s = streams[tok_first + 3];
        const double nan = std::nan("");
        if (s.staged > 0) {
            std::memcpy(s.at(0, s.staged - 1), &nan, sizeof nan);
        } else if (s.written > 0) {
            Id fspace(H5Dget_space(s.dset.get()));
            const hsize_t at = hsize_t(s.written - 1), one = 1;
            H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, &at, nullptr, &one, nullptr);
            Id mspace(H5Screate_simple(1, &one, nullptr));
            if (H5Dwrite(s.dset.get(), H5T_NATIVE_DOUBLE, mspace.get(), fspace.get(), H5P_DEFAULT,
                         &nan) < 0)
                write_fail("cannot write 'tokens/logprob'");
        }
    }

    void close_all() {
        streams.clear();
        f16.reset();
        str.reset();
        file.reset();
        closed = true;
    }
};

namespace {

struct Timer {
    double& acc;
    std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
    ~Timer() {
        acc += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
};

}  // namespace

TraceWriter::TraceWriter(std::string path, TraceMeta meta) : impl_(std::make_unique<Impl>()) {
    impl_->path = std::move(path);
    impl_->partial = impl_->path + ".partial";
    impl_->meta = std::move(meta);
    try {
        impl_->create();
    } catch (...) {
        impl_->close_all();
        std::error_code ec;
        std::filesystem::remove(impl_->partial, ec);
        throw;
    }
}

TraceWriter::~TraceWriter() {
    if (impl_->closed) return;
    impl_->close_all();
    std::error_code ec;
    std::filesystem::remove(impl_->partial, ec);
}

void TraceWriter::on_layer(const LayerTap& tap) {
    Impl& I = *impl_;
    KVS_ASSERT(!I.closed);
    KVS_ASSERT(tap.layer >= 0 && tap.layer < I.meta.model.n_layer);
    const int si = I.layer_stream[size_t(tap.layer)];
    if (si < 0) return;  // not captured
    Timer timer{I.seconds};
    const ModelConfig& c = I.meta.model;
    KVS_ASSERT(tap.n_head == c.n_head && tap.n_head_kv == c.n_head_kv &&
               tap.head_dim == c.head_dim);
    KVS_ASSERT(I.layer_staged[size_t(tap.layer)] == I.tok_staged);  // one call per layer per chunk
    const int n = tap.n_tok, d = c.head_dim;
    const float* src[4] = {tap.q, tap.k, tap.v, tap.out};
    for (int fi = 0; fi < 4; ++fi) {
        Stream& s = I.streams[size_t(si + fi)];
        s.reserve(s.staged + n);
        for (int r = 0; r < s.rows; ++r) {
            const float* x = src[fi] + size_t(r) * size_t(n) * size_t(d);
            if (I.meta.dtype == StorageDtype::F16)
                f32_to_f16(x, reinterpret_cast<uint16_t*>(s.at(r, s.staged)),
                           size_t(n) * size_t(d));
            else
                std::memcpy(s.at(r, s.staged), x, size_t(n) * size_t(d) * sizeof(float));
        }
        s.staged += n;
    }
    Stream& lse = I.streams[size_t(si + 4)];
    lse.reserve(lse.staged + n);
    for (int r = 0; r < lse.rows; ++r)
        std::memcpy(lse.at(r, lse.staged), tap.lse + size_t(r) * size_t(n),
                    size_t(n) * sizeof(float));
    lse.staged += n;
    I.layer_staged[size_t(tap.layer)] += n;
}

void TraceWriter::append_tokens(const TokenRows& rows) {
    Impl& I = *impl_;
    KVS_ASSERT(!I.closed);
    Timer timer{I.seconds};
    const int n = rows.n;
    if (n <= 0) return;
    for (int l : I.meta.layers) KVS_ASSERT(I.layer_staged[size_t(l)] == I.tok_staged + n);
    KVS_ASSERT(rows.ids && rows.pos && rows.logprob && rows.logits_lse && rows.topk_ids &&
               rows.topk_logits);
    const void* src[7] = {rows.ids,        rows.pos,      nullptr,         rows.logprob,
                          rows.logits_lse, rows.topk_ids, rows.topk_logits};
    for (size_t i = 0; i < 7; ++i) {
        Stream& s = I.streams[I.tok_first + i];
        if (i == 2) {  // text: fixed width, zero-padded
            s.reserve(s.staged + n);
            std::memset(s.at(0, s.staged), 0, size_t(n) * s.elt);
            for (int t = 0; rows.text && t < n; ++t) {
                const std::string& x = rows.text[t];
                if (x.size() > s.elt)
                    fail("writing trace '{}': token text of {} bytes exceeds text_width {}",
                         I.partial, x.size(), s.elt);
                std::memcpy(s.at(0, s.staged + t), x.data(), x.size());
            }
        } else {
            s.reserve(s.staged + n);
            std::memcpy(s.at(0, s.staged), src[i], size_t(n) * size_t(s.width) * s.elt);
        }
        s.staged += n;
    }
    I.tok_staged += n;
    I.flush(false);
}

void TraceWriter::set_prompt_len(int64_t n) {
    impl_->prompt_len = n;
}

void TraceWriter::set_task(const TaskRecord& task) {
    impl_->task = task;
}

void TraceWriter::finish(bool complete) {
    Impl& I = *impl_;
    KVS_ASSERT(!I.closed);
    Timer timer{I.seconds};
    for (int l : I.meta.layers) KVS_ASSERT(I.layer_staged[size_t(l)] == I.tok_staged);
    I.end_logprob();
    I.flush(true);
    const hid_t f = I.file.get();
    const std::string& p = I.partial;
    const int64_t n_tokens = I.streams[I.tok_first].written;
    h5::write_attr(f, "n_tokens", n_tokens, p);
    h5::write_attr(f, "prompt_len", std::min(I.prompt_len, n_tokens), p);
    {
        const TaskRecord& t = I.task;
        Id g = I.make_group(f, "task");
        h5::write_attr(g.get(), "kind", t.kind, p);
        if (t.has_answer()) {
            h5::write_attr(g.get(), "answer", t.answer, p);
            h5::write_attr(g.get(), "depth", t.depth, p);
            h5::write_attr(g.get(), "seed", t.seed, p);
            h5::write_attr(g.get(), "needle", t.needle, p);
            if (t.kind == "needle") h5::write_attr(g.get(), "needle_key", t.needle_key, p);
            h5::write_attr(g.get(), "generated", t.generated, p);
            h5::write_attr_bool(g.get(), "correct", t.correct, p);
            auto put = [&](const char* name, const std::vector<int32_t>& v, const char* label) {
                const hsize_t n = v.size();
                Id space(H5Screate_simple(1, &n, nullptr));
                Id d(H5Dcreate2(g.get(), name, H5T_STD_I32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT,
                                H5P_DEFAULT));
                if (!d.valid() || (n > 0 && H5Dwrite(d.get(), H5T_NATIVE_INT32, H5S_ALL, H5S_ALL,
                                                     H5P_DEFAULT, v.data()) < 0))
                    I.write_fail(fmt::format("cannot write 'task/{}'", name));
                H5DSset_label(d.get(), 0, label);
            };
            put("answer_positions", t.answer_positions, "token");
            put("needle_range", {t.needle_begin, t.needle_end}, "bound");
        }
    }
    h5::write_attr_bool(f, "complete", complete, p);
    if (H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) I.write_fail("cannot flush");
    I.streams.clear();
    I.f16.reset();
    I.str.reset();
    const hid_t fid = I.file.get();
    const herr_t rc = H5Fclose(fid);
    I.file = Id();  // already closed (or failed to): do not close again
    I.closed = true;
    I.final_tokens = n_tokens;
    if (rc < 0) {
        std::error_code ec;
        std::filesystem::remove(I.partial, ec);
        fail("writing trace '{}': closing the file failed: {}", I.partial, h5::last_error());
    }
    std::error_code ec;
    std::filesystem::rename(I.partial, I.path, ec);
    if (ec) fail("cannot rename '{}' to '{}': {}", I.partial, I.path, ec.message());
}

int64_t TraceWriter::n_tokens() const {
    const Impl& I = *impl_;
    return I.closed ? I.final_tokens : I.streams[I.tok_first].written + I.tok_staged;
}

uint64_t TraceWriter::file_bytes() const {
    if (impl_->closed) {
        std::error_code ec;
        const auto n = std::filesystem::file_size(impl_->path, ec);
        return ec ? 0 : n;
    }
    hsize_t n = 0;
    H5Fget_filesize(impl_->file.get(), &n);
    return n;
}

int TraceWriter::chunk_tokens() const {
    return impl_->chunk_qkvo;
}
double TraceWriter::seconds_writing() const {
    return impl_->seconds;
}
const std::string& TraceWriter::path() const {
    return impl_->path;
}
std::string TraceWriter::partial_path() const {
    return impl_->partial;
}

}  // namespace kvs::capture
