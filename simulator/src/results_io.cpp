#include "simulator/results_io.h"

#include <fmt/format.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "capture/h5util.h"
#include "engine/error.h"
#include "simulator/policy.h"
#include "simulator/results_schema.h"

namespace kvs::sim {

namespace h5 = kvs::capture::h5;
namespace fs = std::filesystem;

namespace {

std::string utc_now() {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

[[noreturn]] void h5fail(const std::string& what, const std::string& file) {
    const std::string e = h5::last_error();
    fail("results '{}': {}{}{}", file, what, e.empty() ? "" : ": ", e);
}

void write_ds(hid_t loc, const std::string& name, hid_t file_type, hid_t mem_type,
              const std::vector<hsize_t>& dims, const void* data, const std::string& file) {
    h5::Id space(H5Screate_simple(int(dims.size()), dims.data(), nullptr));
    h5::Id dcpl(H5Pcreate(H5P_DATASET_CREATE));
    hsize_t total = 1;
    for (hsize_t x : dims) total *= x;
    if (total > 4096) {
        // Chunks along the first axis, about 1 MB each.
        std::vector<hsize_t> chunk(dims);
        const size_t esz = H5Tget_size(file_type);
        hsize_t inner = esz;
        for (size_t i = 1; i < dims.size(); ++i) inner *= dims[i];
        chunk[0] = std::max<hsize_t>(
            1, std::min<hsize_t>(dims[0], (1u << 20) / std::max<hsize_t>(1, inner)));
        for (size_t i = 1; i < dims.size() && inner > (4u << 20); ++i) {
            // Very large rows: one slice of the second axis at a time.
            chunk[i] = 1;
            inner /= dims[i];
        }
        H5Pset_chunk(dcpl.get(), int(chunk.size()), chunk.data());
        H5Pset_shuffle(dcpl.get());
        H5Pset_deflate(dcpl.get(), 4);
    }
    h5::Id ds(H5Dcreate2(loc, name.c_str(), file_type, space.get(), H5P_DEFAULT, dcpl.get(),
                         H5P_DEFAULT));
    if (!ds.valid()) h5fail(fmt::format("cannot create dataset '{}'", name), file);
    if (total > 0 && H5Dwrite(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        h5fail(fmt::format("cannot write dataset '{}'", name), file);
}

template <class T>
void read_ds(hid_t loc, const std::string& name, hid_t mem_type, const std::vector<uint64_t>& dims,
             std::vector<T>& out, const std::string& where) {
    h5::Id ds(H5Dopen2(loc, name.c_str(), H5P_DEFAULT));
    if (!ds.valid()) fail("{}: missing dataset '{}'", where, name);
    h5::Id space(H5Dget_space(ds.get()));
    const std::vector<uint64_t> shape = h5::shape_of(ds.get());
    if (shape != dims)
        fail("{}: dataset '{}' has shape {}, expected {}", where, name, h5::shape_str(shape),
             h5::shape_str(dims));
    // The stored element type: the same class as asked for (integer / float) and at most
    // 8 bytes (a corrupt type makes HDF5's conversion allocate per element what it declares).
    const h5::Id ftype(H5Dget_type(ds.get()));
    const size_t fsize = ftype.valid() ? H5Tget_size(ftype.get()) : 0;
    if (!ftype.valid() || H5Tget_class(ftype.get()) != H5Tget_class(mem_type) || fsize == 0 ||
        fsize > 8)
        fail("{}: dataset '{}' does not hold {} of at most 8 bytes", where, name,
             H5Tget_class(mem_type) == H5T_FLOAT ? "floats" : "integers");
    size_t n = 1;
    for (uint64_t x : dims) n *= size_t(x);
    // Before allocating: the values must fit in what the file stores. kvscope writes every
    // value (no unwritten chunks), deflated at most ~1032:1 (deflate's limit), so a dataset that
    // declares far more than its stored bytes could hold, or more stored bytes than the file has,
    // is corrupt (or a decompression bomb): refused instead of allocating gigabytes.
    const uint64_t raw = uint64_t(n) * sizeof(T);
    if (raw > (uint64_t(1) << 20)) {
        const uint64_t stored = H5Dget_storage_size(ds.get());
        hsize_t file_bytes = 0;
        const h5::Id fid(H5Iget_file_id(ds.get()));
        if (fid.valid()) H5Fget_filesize(fid.get(), &file_bytes);
        if (raw / 1100 > stored || (file_bytes > 0 && stored > file_bytes))
            fail(
                "{}: dataset '{}' declares {} values ({} bytes) but stores {} bytes in a "
                "{}-byte file: corrupt",
                where, name, n, raw, stored, file_bytes);
    }
    out.resize(n);
    if (n > 0 && H5Dread(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
        fail("{}: cannot read dataset '{}': {}", where, name, h5::last_error());
}

std::string tmp_path(const std::string& path) {
    return path + ".partial";
}

}  // namespace

void check_output_path(const std::string& path) {
    const fs::path p(path);
    const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
        fail("cannot write '{}': directory '{}' does not exist", path, dir.string());
    if (fs::is_directory(p, ec)) fail("cannot write '{}': it is a directory", path);
    // A file can be created there (a read-only or full file system, no permission): found now,
    // not after hours of replay. A probe of this process's own, removed at once.
    const std::string probe = path + ".probe-" + std::to_string(::getpid());
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) fail("cannot write '{}': {}", path, std::strerror(errno));
    ::close(fd);
    ::unlink(probe.c_str());
}

void write_results(const std::string& path, const std::vector<RunResult>& runs,
                   const std::string& command_line) {
    h5::init();
    check_output_path(path);
    const std::string tmp = tmp_path(path);
    try {
        h5::Id f(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
        if (!f.valid()) h5fail("cannot create the file", path);
        h5::write_attr(f.get(), "format", kResultsFormat, path);
        h5::write_attr(f.get(), "schema_version", int64_t(kResultsSchemaVersion), path);
        h5::write_attr(f.get(), "kvscope_version", KVS_VERSION, path);
        h5::write_attr(f.get(), "created", utc_now(), path);
        h5::write_attr(f.get(), "command_line", command_line, path);
        h5::write_attr(f.get(), "n_runs", int64_t(runs.size()), path);
        h5::Id g_runs(H5Gcreate2(f.get(), "runs", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
        h5::Id f16 = h5::f16_type();
        for (size_t i = 0; i < runs.size(); ++i) {
            const RunResult& r = runs[i];
            h5::Id g(H5Gcreate2(g_runs.get(), fmt::format("{:04d}", i).c_str(), H5P_DEFAULT,
                                H5P_DEFAULT, H5P_DEFAULT));
            if (!g.valid()) h5fail("cannot create a run group", path);
            const hid_t G = g.get();
            h5::write_attr(G, "policy", r.policy, path);
            h5::write_attr(G, "spec", r.spec, path);
            h5::write_attr(G, "params_json", r.params_json, path);
            if (!r.closed_loop_json.empty())
                h5::write_attr(G, "closed_loop_json", r.closed_loop_json, path);
            h5::write_attr(G, "budget", r.budget, path);
            h5::write_attr(G, "mode", mode_name(r.mode), path);
            h5::write_attr(G, "prefill_len", int64_t(r.prefill_len), path);
            h5::write_attr(G, "trace_path", r.trace_path, path);
            h5::write_attr(G, "trace_model", r.trace_model, path);
            h5::write_attr(G, "trace_task", r.trace_task, path);
            h5::write_attr_bool(G, "trace_complete", r.trace_complete, path);
            h5::write_attr(G, "n_tokens", int64_t(r.n_tokens), path);
            h5::write_attr(G, "n_head", int64_t(r.n_head), path);
            h5::write_attr(G, "n_head_kv", int64_t(r.n_kv), path);
            h5::write_attr(G, "head_dim", int64_t(r.d), path);
            h5::write_attr(G, "seconds", r.seconds, path);
            const Summary& s = r.summary;
            for (const auto& f : kSummaryFields) h5::write_attr(G, f.name, s.*f.member, path);
            h5::write_attr(G, "restores", double(s.restores), path);
            const hsize_t L = r.layers.size(), S = r.steps.size(), H = hsize_t(r.n_kv),
                          T = hsize_t(r.n_tokens), C = r.ckpt_steps.size();
            write_ds(G, "answer_positions", H5T_STD_I32LE, H5T_NATIVE_INT32,
                     {hsize_t(r.answer_positions.size())}, r.answer_positions.data(), path);
            write_ds(G, "layers", H5T_STD_I32LE, H5T_NATIVE_INT32, {L}, r.layers.data(), path);
            write_ds(G, "steps", H5T_STD_I32LE, H5T_NATIVE_INT32, {S}, r.steps.data(), path);
            write_ds(G, "recall", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {S, L, H}, r.recall.data(),
                     path);
            write_ds(G, "out_rel_err", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {S, L, H}, r.err.data(),
                     path);
            write_ds(G, "out_cos", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {S, L, H}, r.cos.data(), path);
            write_ds(G, "held", H5T_STD_I32LE, H5T_NATIVE_INT32, {S, L, H}, r.held.data(), path);
            write_ds(G, "budget_tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, {S, L, H},
                     r.budget_tokens.data(), path);
            write_ds(G, "bytes", H5T_STD_I64LE, H5T_NATIVE_INT64, {S, L, H}, r.bytes.data(), path);
            write_ds(G, "full_bytes", H5T_STD_I64LE, H5T_NATIVE_INT64, {S}, r.full_bytes.data(),
                     path);
            write_ds(G, "offload_bytes", H5T_STD_I64LE, H5T_NATIVE_INT64, {S, L, H},
                     r.offload_bytes.data(), path);
            write_ds(G, "bit_events", H5T_STD_I32LE, H5T_NATIVE_INT32,
                     {hsize_t(r.bit_events.size() / 4), 4}, r.bit_events.data(), path);
            write_ds(G, "evicted_at", H5T_STD_I32LE, H5T_NATIVE_INT32, {L, H, T},
                     r.evicted_at.data(), path);
            {
                // v3: merges (-1 everywhere for a run whose policy never merged).
                const std::vector<int32_t> none(r.evicted_at.size(), -1);
                const auto& mi = r.merged_into.size() == none.size() ? r.merged_into : none;
                const auto& ma = r.merged_at.size() == none.size() ? r.merged_at : none;
                write_ds(G, "merged_into", H5T_STD_I32LE, H5T_NATIVE_INT32, {L, H, T}, mi.data(),
                         path);
                write_ds(G, "merged_at", H5T_STD_I32LE, H5T_NATIVE_INT32, {L, H, T}, ma.data(),
                         path);
            }
            if (!r.unit_role.empty()) {
                // Optional: the roles the policy's plan gave the units (razor's retrieval heads).
                KVS_ASSERT(r.unit_role.size() == L * H && !r.unit_role_names.empty());
                write_ds(G, "unit_role", H5T_STD_I8LE, H5T_NATIVE_INT8, {L, H}, r.unit_role.data(),
                         path);
                h5::write_attr(G, "unit_role_names",
                               fmt::format("{}", fmt::join(r.unit_role_names, ",")), path);
            }
            write_ds(G, "ckpt_steps", H5T_STD_I32LE, H5T_NATIVE_INT32, {C}, r.ckpt_steps.data(),
                     path);
            write_ds(G, "ckpt_bits", H5T_STD_U8LE, H5T_NATIVE_UINT8, {C, L, H, T},
                     r.ckpt_bits.data(), path);
            write_ds(G, "ckpt_score", f16.get(), f16.get(), {C, L, H, T}, r.ckpt_score.data(),
                     path);
        }
        if (H5Fflush(f.get(), H5F_SCOPE_GLOBAL) < 0) h5fail("cannot flush", path);
    } catch (...) {
        std::remove(tmp.c_str());
        throw;
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) {
        std::remove(tmp.c_str());
        fail("cannot write '{}': {}", path, ec.message());
    }
}

std::vector<RunResult> read_results(const std::string& path) {
    h5::init();
    const std::string where = fmt::format("results '{}'", path);
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) fail("{}: no such file", where);
    if (H5Fis_hdf5(path.c_str()) <= 0) fail("{}: not an HDF5 file", where);
    h5::Id f(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
    if (!f.valid()) fail("{}: cannot open: {}", where, h5::last_error());
    if (!h5::has_attr(f.get(), "format") ||
        h5::read_attr_str(f.get(), "format", where) != kResultsFormat)
        fail("{}: not a kvscope results file (no format = '{}' attribute)", where, kResultsFormat);
    const int64_t ver = h5::read_attr_int(f.get(), "schema_version", where);
    if (ver > kResultsSchemaVersion)
        fail("{}: schema_version {} is newer than this kvscope reads ({}); update kvscope", where,
             ver, kResultsSchemaVersion);
    const int64_t n = h5::read_attr_int(f.get(), "n_runs", where);
    if (n < 0 || n > 1000000) fail("{}: n_runs = {} is out of range", where, n);
    std::vector<RunResult> out;
    h5::Id f16 = h5::f16_type();
    for (int64_t i = 0; i < n; ++i) {
        const std::string gname = fmt::format("runs/{:04d}", i);
        const std::string w = fmt::format("{} run {}", where, gname);
        if (!h5::link_exists(f.get(), gname)) fail("{}: missing", w);
        h5::Id g(H5Gopen2(f.get(), gname.c_str(), H5P_DEFAULT));
        if (!g.valid()) fail("{}: cannot open", w);
        const hid_t G = g.get();
        RunResult r;
        r.policy = h5::read_attr_str(G, "policy", w);
        r.spec = h5::read_attr_str(G, "spec", w);
        r.params_json = h5::read_attr_str(G, "params_json", w);
        if (h5::has_attr(G, "closed_loop_json"))
            r.closed_loop_json = h5::read_attr_str(G, "closed_loop_json", w);
        r.budget = h5::read_attr_str(G, "budget", w);
        const std::string mode = h5::read_attr_str(G, "mode", w);
        if (mode != "stream" && mode != "prefill") fail("{}: mode '{}' is unknown", w, mode);
        r.mode = mode == "stream" ? Mode::stream : Mode::prefill;
        r.prefill_len = h5::read_attr_int(G, "prefill_len", w);
        r.trace_path = h5::read_attr_str(G, "trace_path", w);
        r.trace_model = h5::read_attr_str(G, "trace_model", w);
        r.trace_task = h5::read_attr_str(G, "trace_task", w);
        r.trace_complete = h5::read_attr_bool(G, "trace_complete", w);
        r.n_tokens = h5::read_attr_int(G, "n_tokens", w);
        r.n_head = int(h5::read_attr_int(G, "n_head", w));
        r.n_kv = int(h5::read_attr_int(G, "n_head_kv", w));
        r.d = int(h5::read_attr_int(G, "head_dim", w));
        r.seconds = h5::read_attr_float(G, "seconds", w);
        if (r.n_tokens < 1 || r.n_tokens > (int64_t(1) << 31) || r.n_kv < 1 || r.n_kv > 4096 ||
            r.d < 1 || r.d > 65536)
            fail("{}: n_tokens / n_head_kv / head_dim out of range", w);
        Summary& s = r.summary;
        for (const auto& f : kSummaryFields)
            s.*f.member = ver >= f.since ? h5::read_attr_float(G, f.name, w) : 0.0;
        {
            // A count stored as a float: anything but a whole number in range is refused (a
            // crafted inf made the conversion undefined; found by the results fuzz target).
            const double restores = h5::read_attr_float(G, "restores", w);
            if (!(restores >= 0 && restores <= 9.0e15) || restores != std::floor(restores))
                fail("{}: attribute 'restores' = {} is not a count", w, restores);
            s.restores = int64_t(restores);
        }
        {
            const std::vector<uint64_t> sa =
                h5::shape_of(h5::Id(H5Dopen2(G, "answer_positions", H5P_DEFAULT)).get());
            if (sa.size() != 1 || sa[0] > 1000000) fail("{}: answer_positions must be 1-D", w);
            read_ds(G, "answer_positions", H5T_NATIVE_INT32, sa, r.answer_positions, w);
        }
        const std::vector<uint64_t> sl =
            h5::shape_of(h5::Id(H5Dopen2(G, "layers", H5P_DEFAULT)).get());
        const std::vector<uint64_t> ss =
            h5::shape_of(h5::Id(H5Dopen2(G, "steps", H5P_DEFAULT)).get());
        const std::vector<uint64_t> sc =
            h5::shape_of(h5::Id(H5Dopen2(G, "ckpt_steps", H5P_DEFAULT)).get());
        if (sl.size() != 1 || ss.size() != 1 || sc.size() != 1)
            fail("{}: layers / steps / ckpt_steps must be 1-D", w);
        const uint64_t L = sl[0], S = ss[0], H = uint64_t(r.n_kv), T = uint64_t(r.n_tokens),
                       C = sc[0];
        if (S > T || C > S || L > 100000) fail("{}: steps / checkpoints / layers out of range", w);
        read_ds(G, "layers", H5T_NATIVE_INT32, {L}, r.layers, w);
        read_ds(G, "steps", H5T_NATIVE_INT32, {S}, r.steps, w);
        read_ds(G, "recall", H5T_NATIVE_FLOAT, {S, L, H}, r.recall, w);
        read_ds(G, "out_rel_err", H5T_NATIVE_FLOAT, {S, L, H}, r.err, w);
        read_ds(G, "out_cos", H5T_NATIVE_FLOAT, {S, L, H}, r.cos, w);
        read_ds(G, "held", H5T_NATIVE_INT32, {S, L, H}, r.held, w);
        read_ds(G, "budget_tokens", H5T_NATIVE_INT32, {S, L, H}, r.budget_tokens, w);
        read_ds(G, "bytes", H5T_NATIVE_INT64, {S, L, H}, r.bytes, w);
        read_ds(G, "full_bytes", H5T_NATIVE_INT64, {S}, r.full_bytes, w);
        if (ver >= 2)
            read_ds(G, "offload_bytes", H5T_NATIVE_INT64, {S, L, H}, r.offload_bytes, w);
        else
            r.offload_bytes.assign(S * L * H, 0);
        read_ds(G, "evicted_at", H5T_NATIVE_INT32, {L, H, T}, r.evicted_at, w);
        if (ver >= 3) {
            read_ds(G, "merged_into", H5T_NATIVE_INT32, {L, H, T}, r.merged_into, w);
            read_ds(G, "merged_at", H5T_NATIVE_INT32, {L, H, T}, r.merged_at, w);
        } else {
            r.merged_into.assign(L * H * T, -1);
            r.merged_at.assign(L * H * T, -1);
        }
        if (h5::link_exists(G, "unit_role")) {  // optional: a policy's roles of the units
            read_ds(G, "unit_role", H5T_NATIVE_INT8, {L, H}, r.unit_role, w);
            const std::string names = h5::read_attr_str(G, "unit_role_names", w);
            for (size_t a = 0; a <= names.size();) {
                const size_t b = std::min(names.find(',', a), names.size());
                r.unit_role_names.push_back(names.substr(a, b - a));
                a = b + 1;
            }
            for (int8_t x : r.unit_role)
                if (x < 0 || size_t(x) >= r.unit_role_names.size())
                    fail("{}: unit_role {} names no role of '{}'", w, int(x), names);
        }
        if (h5::link_exists(G, "bit_events")) {  // optional (files before it existed lack it)
            const std::vector<uint64_t> se =
                h5::shape_of(h5::Id(H5Dopen2(G, "bit_events", H5P_DEFAULT)).get());
            if (se.size() != 2 || se[1] != 4 || se[0] > (uint64_t(1) << 32))
                fail("{}: bit_events must be [E, 4]", w);
            read_ds(G, "bit_events", H5T_NATIVE_INT32, se, r.bit_events, w);
        }
        read_ds(G, "ckpt_steps", H5T_NATIVE_INT32, {C}, r.ckpt_steps, w);
        read_ds(G, "ckpt_bits", H5T_NATIVE_UINT8, {C, L, H, T}, r.ckpt_bits, w);
        read_ds(G, "ckpt_score", f16.get(), {C, L, H, T}, r.ckpt_score, w);
        out.push_back(std::move(r));
    }
    return out;
}

namespace {
std::string csv_field(const std::string& s) {
    if (s.find_first_of(",\"\n") == std::string::npos) return s;
    std::string o = "\"";
    for (char c : s) o += c == '"' ? std::string("\"\"") : std::string(1, c);
    return o + "\"";
}
}  // namespace

void write_summary_csv(const std::string& path, const std::vector<RunResult>& runs) {
    check_output_path(path);
    const std::string tmp = tmp_path(path);
    {
        std::ofstream o(tmp);
        if (!o) fail("cannot write '{}'", path);
        o << "trace,policy,spec,budget,mode,prefill_len,n_tokens,steps,recall_mean,recall_p5,"
             "err_mean,err_p95,cos_mean,cos_p5,held_mean,bytes_mean,bytes_peak,full_bytes_mean,"
             "ratio_mean,ratio_at_peak,ratio_final,restores,answer_kept,offload_bytes_mean,"
             "seconds\n";
        for (const auto& r : runs) {
            const Summary& s = r.summary;
            o << fmt::format(
                "{},{},{},{},{},{},{},{},{:.6f},{:.6f},{:.6g},{:.6g},{:.6f},{:.6f},{:.2f},{:.0f},"
                "{:.0f},{:.0f},{:.4f},{:.4f},{:.4f},{},{},{:.0f},{:.3f}\n",
                csv_field(r.trace_path), r.policy, csv_field(r.spec), r.budget, mode_name(r.mode),
                r.prefill_len, r.n_tokens, r.steps.size(), s.recall_mean, s.recall_p5, s.err_mean,
                s.err_p95, s.cos_mean, s.cos_p5, s.held_mean, s.bytes_mean, s.bytes_peak,
                s.full_bytes_mean, s.ratio_mean, s.ratio_at_peak, s.ratio_final, s.restores,
                s.answer_kept < 0 ? std::string() : fmt::format("{:.4f}", s.answer_kept),
                s.offload_bytes_mean, r.seconds);
        }
        if (!o.flush()) {
            std::remove(tmp.c_str());
            fail("cannot write '{}'", path);
        }
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) fail("cannot write '{}': {}", path, ec.message());
}

namespace {
// The spec's parameters that differ from the policy's defaults, budget aside ("bits=2").
std::string non_default(const RunResult& r) {
    const PolicyEntry* e = find_policy(r.policy);
    const size_t colon = r.spec.find(':');
    if (colon == std::string::npos) return "";
    std::string out, rest = r.spec.substr(colon + 1);
    size_t i = 0;
    while (i <= rest.size()) {
        const size_t j = std::min(rest.find(',', i), rest.size());
        const std::string kv = rest.substr(i, j - i);
        i = j + 1;
        const size_t eq = kv.find('=');
        if (eq == std::string::npos) continue;
        const std::string k = kv.substr(0, eq), v = kv.substr(eq + 1);
        if (k == "budget") continue;
        bool is_default = false;
        if (e)
            for (const auto& p : e->info.params)
                if (p.name == k && p.def == v) is_default = true;
        if (!is_default) out += (out.empty() ? "" : ",") + kv;
    }
    return out;
}
}  // namespace

std::string summary_table(const std::vector<RunResult>& runs) {
    bool answers = false;
    for (const auto& r : runs) answers |= r.summary.answer_kept >= 0;
    const std::string ans_h = answers ? fmt::format(" {:>7}", "answer") : "";
    const std::string ans_h2 = answers ? fmt::format(" {:>7}", "kept") : "";
    std::string out =
        fmt::format("{:<10} {:>6} {:>7} {:>7} {:>8} {:>8} {:>7} {:>8} {:>7}{} {:>6}  {}\n",
                    "policy", "budget", "recall", "recall", "out err", "out err", "held", "KV MiB",
                    "ratio", ans_h, "sec", "params");
    out += fmt::format("{:<10} {:>6} {:>7} {:>7} {:>8} {:>8} {:>7} {:>8} {:>7}{} {:>6}\n", "", "",
                       "mean", "p5", "mean", "p95", "mean", "mean", "mean", ans_h2, "");
    for (const auto& r : runs) {
        const Summary& s = r.summary;
        std::string ans;
        if (answers)
            ans = s.answer_kept < 0 ? fmt::format(" {:>7}", "-")
                                    : fmt::format(" {:>6.0f}%", 100.0 * s.answer_kept);
        out += fmt::format(
            "{:<10} {:>6} {:>7.4f} {:>7.4f} {:>8.4f} {:>8.4f} {:>7.1f} {:>8.2f} {:>6.2f}x{} "
            "{:>6.2f}"
            "  {}\n",
            r.policy, r.budget.empty() ? "-" : r.budget, s.recall_mean, s.recall_p5, s.err_mean,
            s.err_p95, s.held_mean, s.bytes_mean / (1024.0 * 1024.0), s.ratio_mean, ans, r.seconds,
            non_default(r));
    }
    return out;
}

}  // namespace kvs::sim
