// kvscope info: what a trace holds (model, shapes, tokens, task, size, completeness).
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "capture/trace_reader.h"
#include "common.h"
#include "engine/error.h"

namespace kvs::cli {

namespace {

struct InfoArgs {
    std::string path;
    int n_show = 24;
    bool json = false;
    bool check = false;  // read every q, k, v, o, lse value (the reader refuses non-finite ones)
};

// Reads every per-layer value of the trace through the reader, which throws kvs::Error at the
// first NaN / inf (layer, field, head, token). Returns the number of values read.
int64_t check_values(const capture::TraceReader& r) {
    const capture::TraceInfo& ti = r.info();
    int64_t n = 0;
    for (int layer : ti.layers) {
        for (capture::Field f :
             {capture::Field::Q, capture::Field::K, capture::Field::V, capture::Field::O})
            n += int64_t(r.read_heads(f, layer, 0, ti.n_tokens).size());
        for (int h = 0; h < ti.n_head; ++h)
            n += int64_t(r.read_lse(layer, h, 0, ti.n_tokens).size());
    }
    return n;
}

// Token text made printable on one line: control characters escaped, invalid UTF-8 replaced.
std::string printable(const std::string& s) {
    const std::string j =
        nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return j.substr(1, j.size() - 2);
}

void run_info(const InfoArgs& a) {
    const capture::TraceReader r(a.path);
    const capture::TraceInfo& ti = r.info();
    const int64_t n_checked = a.check ? check_values(r) : -1;
    const int64_t n_show = std::min<int64_t>(a.n_show, ti.n_tokens);
    const std::vector<std::string> first = r.token_text(0, n_show);
    std::string joined;
    for (const std::string& s : first) joined += s;
    const capture::TaskRecord& t = ti.task;

    if (a.json) {
        nlohmann::json j = {
            {"path", ti.path},
            {"schema_version", ti.schema_version},
            {"kvscope_version", ti.kvscope_version},
            {"model", {{"name", ti.model_name}, {"arch", ti.model_arch}, {"path", ti.model_path}}},
            {"n_layer", ti.n_layer},
            {"n_head", ti.n_head},
            {"n_head_kv", ti.n_head_kv},
            {"head_dim", ti.head_dim},
            {"layers", ti.layers},
            {"rope",
             {{"theta", ti.rope_theta},
              {"scaling", ti.rope_scaling.type},
              {"pairing", ti.rope_pairing}}},
            {"dtype", capture::dtype_name(ti.dtype)},
            {"compression", ti.compression},
            {"n_tokens", ti.n_tokens},
            {"prompt_len", ti.prompt_len},
            {"complete", ti.complete},
            {"created", ti.created},
            {"command_line", ti.command_line},
            {"file_bytes", ti.file_bytes},
            {"first_tokens", joined},
            {"task", {{"kind", t.kind}}}};
        if (a.check) j["values_checked"] = n_checked;
        if (t.has_answer()) {
            j["task"]["answer"] = t.answer;
            j["task"]["depth"] = t.depth;
            j["task"]["seed"] = t.seed;
            j["task"]["needle"] = t.needle;
            if (!t.needle_key.empty()) j["task"]["needle_key"] = t.needle_key;
            j["task"]["generated"] = t.generated;
            j["task"]["correct"] = t.correct;
            j["task"]["answer_positions"] = t.answer_positions;
        }
        fmt::print("{}\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
        return;
    }
    const auto list = [](const std::vector<int>& v, int n_layer) {
        if (int(v.size()) == n_layer) return fmt::format("all {}", n_layer);
        return fmt::format("{} of {}: {}", v.size(), n_layer, fmt::join(v, ","));
    };
    fmt::print("trace:       {} (schema {}, written by kvscope {})\n", ti.path, ti.schema_version,
               ti.kvscope_version);
    fmt::print("complete:    {}\n", ti.complete ? "yes" : "NO (interrupted capture)");
    fmt::print("model:       {} ({}, {})\n", ti.model_name, ti.model_arch, ti.model_path);
    fmt::print("shapes:      n_head {}, n_head_kv {}, head_dim {}; layers {}\n", ti.n_head,
               ti.n_head_kv, ti.head_dim, list(ti.layers, ti.n_layer));
    fmt::print("             q, o [{}, {}, {}]  k, v [{}, {}, {}]  lse [{}, {}]\n", ti.n_head,
               ti.n_tokens, ti.head_dim, ti.n_head_kv, ti.n_tokens, ti.head_dim, ti.n_head,
               ti.n_tokens);
    fmt::print("rope:        theta {}, scaling {}, pairing {}\n", ti.rope_theta,
               ti.rope_scaling.type, ti.rope_pairing);
    fmt::print("tokens:      {} ({} prompt + {} generated)\n", ti.n_tokens, ti.prompt_len,
               ti.n_tokens - ti.prompt_len);
    fmt::print("storage:     {}, {}; {:.2f} MB on disk ({:.1f} KB/token)\n",
               capture::dtype_name(ti.dtype), ti.compression, double(ti.file_bytes) / 1e6,
               ti.n_tokens ? double(ti.file_bytes) / 1e3 / double(ti.n_tokens) : 0.0);
    if (a.check) fmt::print("values:      all {} q, k, v, o, lse values finite\n", n_checked);
    fmt::print("task:        {}\n", t.kind);
    if (t.has_answer()) {
        fmt::print("answer:      {} (depth {:.2f}, seed {}{}{})\n", t.answer, t.depth, t.seed,
                   t.needle_key.empty() ? "" : ", key ", t.needle_key);
        fmt::print("generated:   \"{}\" -> {}\n", printable(t.generated),
                   t.correct ? "correct" : "wrong");
    }
    fmt::print("created:     {}\n", ti.created);
    fmt::print("command:     {}\n", ti.command_line);
    fmt::print("first {} tokens: \"{}\"\n", n_show, printable(joined));
}

}  // namespace

void register_info(CLI::App& app) {
    auto a = std::make_shared<InfoArgs>();
    CLI::App* c = app.add_subcommand("info", "Show what a trace file holds");
    c->add_option("trace", a->path, "Trace file (.h5)")->required();
    c->add_option("--tokens", a->n_show, "How many first tokens to show")
        ->check(CLI::Range(0, 1 << 20))
        ->capture_default_str();
    c->add_flag("--json", a->json, "One JSON object on stdout");
    c->add_flag("--check", a->check,
                "Read every q, k, v, o and lse value: a NaN or inf is a one-line error "
                "(replay and the viewer refuse them as they read)");
    c->callback([a] { run_info(*a); });
}

}  // namespace kvs::cli
