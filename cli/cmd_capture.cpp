// kvscope capture: record an attention trace (capture/trace_schema.h) during real inference.
//
// Interruption: SIGINT / SIGTERM set a flag; the capture finishes the forward call in flight,
// writes the trace with complete = false, closes it, renames it to --out and exits with
// 128 + the signal number (130 / 143). A second signal kills the process at once (the default
// action); then, as after any crash, only "<out>.partial" is left, never a file at --out.
#include <fmt/format.h>

#include <chrono>
#include <csignal>
#include <nlohmann/json.hpp>
#include <random>

#include "capture/capture.h"
#include "capture/prompts.h"
#include "capture/trace_writer.h"
#include "common.h"
#include "engine/error.h"
#include "engine/progress.h"
#include "engine/runner.h"
#include "live_options.h"
#include "output_lock.h"
#include "simulator/replay.h"
#include "simulator/results_io.h"

namespace kvs::cli {

namespace {

volatile std::sig_atomic_t g_signal = 0;

extern "C" void on_stop_signal(int sig) {
    g_signal = sig;
}

// Installs SIGINT / SIGTERM handlers for its lifetime; each fires once (SA_RESETHAND), so a
// second Ctrl-C takes the default action.
class StopSignals {
  public:
    StopSignals() {
        g_signal = 0;
        struct sigaction sa {};
        sa.sa_handler = on_stop_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESETHAND;
        sigaction(SIGINT, &sa, &old_int_);
        sigaction(SIGTERM, &sa, &old_term_);
    }
    ~StopSignals() {
        sigaction(SIGINT, &old_int_, nullptr);
        sigaction(SIGTERM, &old_term_, nullptr);
    }
    StopSignals(const StopSignals&) = delete;
    StopSignals& operator=(const StopSignals&) = delete;

  private:
    struct sigaction old_int_ {};
    struct sigaction old_term_ {};
};

struct CaptureArgs {
    std::string model, text_file, prompt, task, haystack, out, layers = "all", dtype = "f16",
                                                               compress = "gzip:1", logits = "topk";
    bool chat = false, quiet = false;
    int ctx = 512, generate = -1, chunk = 256;
    double depth = 0.5;
    int64_t seed = -1;
    SamplerParams sp;
    LiveArgs live;
    std::string decisions;
};

void run_capture_cmd(const CaptureArgs& a) {
    using namespace kvs::capture;
    const int n_modes = int(!a.text_file.empty()) + int(!a.prompt.empty()) + int(!a.task.empty());
    if (n_modes != 1) fail("give exactly one of --text-file, --prompt, --task");
    if (a.chat && !a.text_file.empty())
        fail("--chat applies to --prompt and --task, not --text-file");
    if (a.task == "needle" && a.haystack.empty()) fail("--task needle needs --haystack FILE");
    if (!a.haystack.empty() && a.task != "needle") fail("--haystack applies to --task needle");
    if (a.dtype != "f16" && a.dtype != "f32") fail("--dtype '{}': expected f16 or f32", a.dtype);
    LogitsMode logits_mode = LogitsMode::topk;
    if (!logits_mode_from_name(a.logits, &logits_mode))
        fail("--logits '{}': expected topk, lse or none", a.logits);
    if (!a.live.policy.empty()) {  // bad options fail before the model loads
        sim::parse_spec(a.live.policy);
        parse_mode(a.live.mode);
        parse_kv_dtype(a.live.kv_dtype);
    }
    const int gzip = parse_compression(a.compress);
    const uint64_t seed = a.seed >= 0 ? uint64_t(a.seed) : std::random_device{}() % 1000000;
    const std::string haystack = a.haystack.empty() ? "" : read_text_file(a.haystack);
    const std::string text = a.text_file.empty() ? "" : read_text_file(a.text_file);

    LoadedModel lm = load_model(a.model);
    const Model& m = *lm.model;
    const Tokenizer& tok = *lm.tokenizer;
    const ModelConfig& mc = m.config();
    const std::vector<int> layers = parse_layer_list(a.layers, mc.n_layer);

    CaptureRequest req;
    req.chunk = a.chunk;
    req.logits = logits_mode;
    req.sampling = a.sp;
    req.sampling.seed = seed;
    TaskRecord task;
    std::string kind;
    if (!a.text_file.empty()) {
        kind = "text";
        req.prompt = tok.encode(text, false, false);
        if (int(req.prompt.size()) > a.ctx) req.prompt.resize(size_t(a.ctx));
        if (req.prompt.size() < 2)
            fail("text file '{}' has {} token(s), need at least 2", a.text_file, req.prompt.size());
        if (!a.quiet && int(req.prompt.size()) < a.ctx)
            fmt::print(stderr, "note: '{}' has only {} tokens (--ctx {})\n", a.text_file,
                       req.prompt.size(), a.ctx);
        req.n_generate = a.generate < 0 ? 0 : a.generate;
    } else if (!a.prompt.empty()) {
        kind = "prompt";
        const std::string t =
            a.chat ? tok.apply_chat_template({{"user", a.prompt}}, true) : a.prompt;
        req.prompt = tok.encode(t, false, a.chat);
        if (req.prompt.empty()) fail("the prompt is empty");
        req.n_generate = a.generate < 0 ? 32 : a.generate;
    } else {
        kind = a.task;
        TaskParams tp;
        tp.kind = a.task;
        tp.ctx = a.ctx;
        tp.depth = a.depth;
        tp.seed = seed;
        tp.chat = a.chat;
        tp.haystack = haystack;
        TaskPrompt p = build_task_prompt(tok, tp);
        req.prompt = std::move(p.ids);
        task = std::move(p.task);
        req.n_generate = a.generate < 0 ? 16 : a.generate;
    }
    task.kind = kind;
    const int n_ctx = mc.n_ctx_train > 0 ? mc.n_ctx_train : 1 << 20;
    if (int(req.prompt.size()) + req.n_generate > n_ctx)
        fail("prompt ({} tokens) + {} new tokens exceeds the context length {}", req.prompt.size(),
             req.n_generate, n_ctx);

    nlohmann::json cfg = {
        {"mode", kind},
        {"model", a.model},
        {"text_file", a.text_file},
        {"prompt", a.prompt},
        {"chat", a.chat},
        {"ctx", a.ctx},
        {"generate", req.n_generate},
        {"chunk", a.chunk},
        {"logits", a.logits},
        {"layers", layers},
        {"dtype", a.dtype},
        {"compress", compression_name(gzip)},
        {"sampling",
         {{"temperature", a.sp.temperature}, {"top_p", a.sp.top_p}, {"top_k", a.sp.top_k}}},
        {"seed", seed},
        {"prompt_tokens", req.prompt.size()},
        {"model_config",
         {{"arch", mc.arch},
          {"name", mc.name},
          {"n_layer", mc.n_layer},
          {"n_embd", mc.n_embd},
          {"n_head", mc.n_head},
          {"n_head_kv", mc.n_head_kv},
          {"head_dim", mc.head_dim},
          {"n_ff", mc.n_ff},
          {"n_vocab", mc.n_vocab},
          {"n_ctx_train", mc.n_ctx_train},
          {"rms_eps", mc.rms_eps},
          {"rope_theta", mc.rope_theta},
          {"rope_scaling", mc.rope_scaling.type},
          {"rope_pairing", rope_pairing_name(mc.rope_pairing)},
          {"tied_embeddings", mc.tied_embeddings},
          {"qkv_bias", mc.qkv_bias}}}};
    if (task.has_answer())
        cfg["task"] = {{"kind", task.kind},
                       {"depth", task.depth},
                       {"haystack", a.haystack},
                       {"answer", task.answer},
                       {"needle", task.needle}};

    TraceMeta meta;
    meta.model = mc;
    meta.model_path = a.model;
    meta.command_line = command_line();
    meta.config_json = cfg.dump();
    meta.dtype = a.dtype == "f16" ? StorageDtype::F16 : StorageDtype::F32;
    meta.gzip_level = gzip;
    meta.layers = layers;
    meta.text_width = max_token_bytes(tok);
    meta.logits = logits_mode_name(logits_mode);
    meta.rope_inv_freq = m.rope_inv_freq();

    std::unique_ptr<sim::LiveCache> live;
    std::string decisions = a.decisions;
    if (!a.live.policy.empty()) {
        live = make_live_cache(m, sim::parse_spec(a.live.policy), a.live,
                               int64_t(req.prompt.size()) + req.n_generate,
                               int64_t(req.prompt.size()), true, req.prompt);
        req.cache = live.get();
        if (decisions.empty()) {
            decisions = a.out;
            if (decisions.size() > 3 && decisions.substr(decisions.size() - 3) == ".h5")
                decisions.resize(decisions.size() - 3);
            decisions += ".decisions.h5";
        }
        sim::check_output_path(decisions);
    } else if (!a.decisions.empty()) {
        fail("--decisions needs --policy");
    }
    if (!a.quiet)
        fmt::print(stderr, "model: {} | {} prompt + {} new tokens | {} layers, {}, {} -> {}\n",
                   lm.weights->describe(), req.prompt.size(), req.n_generate, layers.size(),
                   a.dtype, compression_name(gzip), a.out);
    const OutputLock lock(a.out);
    StopSignals signals;
    TraceWriter w(a.out, meta);
    w.set_prompt_len(int64_t(req.prompt.size()));
    Progress bar("capture", int64_t(req.prompt.size()) + req.n_generate, a.quiet);
    const auto t0 = std::chrono::steady_clock::now();
    const CaptureResult r = run_capture(
        m, &tok, req, w, [] { return g_signal != 0; },
        [&](int64_t done) {
            bar.update(done, fmt::format("{:.1f} MB written", double(w.file_bytes()) / 1e6));
        });

    std::vector<int32_t> gen;
    for (int32_t id : r.generated)
        if (id < tok.n_vocab() && !tok.is_eog(id)) gen.push_back(id);
    task.generated = tok.decode(gen);
    task.correct = answer_found(task.generated, task.answer);
    w.set_task(task);
    w.finish(!r.interrupted);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const uint64_t bytes = w.file_bytes();
    bar.finish(fmt::format("{:.1f} MB", double(bytes) / 1e6));

    if (live) {
        sim::RunResult rr = sim::live_run_result(*live, r.n_tokens);
        rr.trace_path = a.out;
        rr.trace_model = mc.name;
        rr.trace_task = task.kind;
        if (task.has_answer()) rr.answer_positions = task.answer_positions;
        rr.trace_complete = !r.interrupted;
        rr.seconds = seconds;
        const int64_t restores = rr.summary.restores;
        rr.summary = sim::summarize(rr);
        rr.summary.restores = restores;
        sim::write_results(decisions, {rr}, command_line());
        if (!a.quiet)
            fmt::print(stderr, "wrote {}: the live policy's decisions ({})\n", decisions,
                       live->spec().canonical);
    }
    if (!a.quiet) {
        fmt::print(stderr,
                   "wrote {}: {} tokens ({} prompt + {} generated), {:.1f} MB, {:.1f} KB/token, "
                   "{:.1f} s ({:.1f} s in the writer)\n",
                   a.out, r.n_tokens, std::min<int64_t>(r.n_tokens, int64_t(req.prompt.size())),
                   r.generated.size(), double(bytes) / 1e6,
                   r.n_tokens ? double(bytes) / 1e3 / double(r.n_tokens) : 0.0, seconds,
                   w.seconds_writing());
        if (!a.prompt.empty() || task.has_answer())
            fmt::print(stderr, "generated: {}\n", nlohmann::json(task.generated).dump());
        if (task.has_answer())
            fmt::print(stderr, "{}: answer {} at depth {:.2f} -> {}\n", task.kind, task.answer,
                       task.depth, task.correct ? "correct" : "wrong");
    }
    if (r.interrupted) {
        const int sig = g_signal ? int(g_signal) : SIGINT;
        fmt::print(stderr,
                   "kvscope: interrupted ({}): wrote {} of {} tokens to {} with complete = false\n",
                   sig == SIGTERM ? "SIGTERM" : "SIGINT", r.n_tokens,
                   req.prompt.size() + size_t(req.n_generate), a.out);
        throw ExitStatus{128 + sig};
    }
}

}  // namespace

void register_capture(CLI::App& app) {
    auto a = std::make_shared<CaptureArgs>();
    CLI::App* c = app.add_subcommand(
        "capture", "Record an attention trace (q, k, v, attention output, lse, tokens) to HDF5");
    add_model_option(*c, a->model);
    c->add_option("-f,--text-file", a->text_file, "Capture the first --ctx tokens of a text");
    CLI::Option* prompt =
        c->add_option("-p,--prompt", a->prompt, "Capture a prompt and --generate new tokens");
    c->add_option("--task", a->task, "Capture a retrieval prompt of --ctx tokens")
        ->check(CLI::IsMember({"passkey", "needle"}));
    c->add_option("--haystack", a->haystack, "Text file to hide the needle in (--task needle)");
    c->add_flag("--chat", a->chat, "Wrap the prompt in the model's chat template");
    c->add_option("-c,--ctx", a->ctx, "Tokens of text, or total prompt length of a task")
        ->check(CLI::Range(2, 1 << 24))
        ->capture_default_str();
    c->add_option("--depth", a->depth, "Task: where the needle goes, 0 (start) .. 1 (end)")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    c->add_option("-n,--generate", a->generate,
                  "Tokens to generate (default: 0 for text, 32 for a prompt, 16 for a task)")
        ->check(CLI::Range(0, 1 << 20));
    c->add_option("--layers", a->layers, "Layers to capture: all, or a list like 0,5,10-12")
        ->capture_default_str();
    c->add_option("--dtype", a->dtype, "Storage of q, k, v, o: f16 or f32")->capture_default_str();
    c->add_option("--compress", a->compress, "none, gzip or gzip:L (L = 1..9; with shuffle)")
        ->capture_default_str();
    c->add_option("--logits", a->logits,
                  "Logits rows to record: topk (every token: log-prob, log-sum-exp, top-16), lse "
                  "(no top-16), none (the prompt's rows without logits: as cheap as a plain "
                  "prefill; replay and the viewer need none of them)")
        ->capture_default_str();
    c->add_option("--chunk", a->chunk, "Prompt tokens per forward call")
        ->check(CLI::Range(1, 1 << 16))
        ->capture_default_str();
    add_sampling_options(*c, a->sp);
    add_live_options(*c, a->live);
    c->add_option("--decisions", a->decisions,
                  "With --policy: where to write the live policy's decisions (results format; "
                  "default: OUT with .decisions.h5)");
    c->add_option("--seed", a->seed,
                  "Seed for the task's answer and for sampling (default: random, recorded)")
        ->check(CLI::Range(int64_t(0), int64_t(1) << 62));
    c->add_option("-o,--out", a->out, "Trace file to write (.h5)")->required();
    c->add_flag("-q,--quiet", a->quiet, "No progress bar or summary");
    c->callback([a, prompt] {
        // --prompt "" is an empty prompt, not a missing option.
        if (prompt->count() > 0 && a->prompt.empty()) fail("the prompt is empty");
        run_capture_cmd(*a);
    });
}

}  // namespace kvs::cli
