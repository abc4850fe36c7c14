// Capture with the real model (models/SmolLM2-135M-Instruct.Q4_1.gguf): the recompute-attention
// check on a short prompt (f32 and f16), stored log-probabilities give kvscope's perplexity, and
// passkey / needle prompts hold the answer exactly once at the requested depth.
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "capture/capture.h"
#include "capture/prompts.h"
#include "capture/trace_reader.h"
#include "engine/runner.h"
#include "gguf_writer.h"
#include "real_model.h"
#include "trace_check.h"

using namespace kvs;
using namespace kvs::capture;

namespace {

using test::have_model;
using test::real_model;

std::string read_fixture(const char* name) {
    std::ifstream f(std::string(KVS_FIXTURES) + "/" + name, std::ios::binary);
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// Captures `ids` (+ n_generate) with the real model into a trace; returns its path.
std::string capture_real(const std::vector<int32_t>& ids, int n_generate, StorageDtype dt,
                         const std::string& name, CaptureResult* out = nullptr) {
    const LoadedModel& lm = real_model();
    const std::string path = test::temp_path(name);
    TraceMeta meta;
    meta.model = lm.model->config();
    meta.model_path = KVS_MODEL;
    meta.dtype = dt;
    meta.text_width = max_token_bytes(*lm.tokenizer);
    TraceWriter w(path, meta);
    w.set_prompt_len(int64_t(ids.size()));
    CaptureRequest req;
    req.prompt = ids;
    req.n_generate = n_generate;
    const CaptureResult r = run_capture(*lm.model, lm.tokenizer.get(), req, w);
    w.finish(!r.interrupted);
    if (out) *out = r;
    return path;
}

int count_of(const std::string& s, const std::string& what) {
    int n = 0;
    for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
    return n;
}

std::string decode_range(const Tokenizer& tok, const std::vector<int32_t>& ids, int b, int e) {
    std::string s;
    for (int i = b; i < e; ++i) s += tok.token_text(ids[size_t(i)]);
    return s;
}

}  // namespace

TEST_CASE("capture (real model): stored q, k, v reproduce o and lse in every layer and head",
          "[model]") {
    if (!have_model()) return;
    const LoadedModel& lm = real_model();
    const std::vector<int32_t> ids = lm.tokenizer->encode(
        "The quick brown fox jumps over the lazy dog. It was a sunny day, and");
    for (StorageDtype dt : {StorageDtype::F32, StorageDtype::F16}) {
        DYNAMIC_SECTION(dtype_name(dt)) {
            CaptureResult res;
            const std::string path = capture_real(ids, 6, dt, "real_attn.h5", &res);
            const TraceReader r(path);
            const TraceInfo& ti = r.info();
            CHECK(ti.n_tokens == int64_t(ids.size()) + 6);
            CHECK(ti.layers.size() == 30);
            CHECK(ti.rope_pairing == "interleaved");
            CHECK(ti.model_arch == "llama");
            // Token text round trip.
            const auto text = r.token_text();
            std::string joined;
            for (const auto& s : text) joined += s;
            CHECK(joined.rfind("The quick brown fox", 0) == 0);
            const test::AttnCheck c = test::check_attention(r);
            INFO("rows " << c.n_rows << ", max o rel err " << c.max_o_rel << ", max lse err "
                         << c.max_lse_abs << ", worst err/tol " << c.max_ratio << "; "
                         << c.first_bad);
            CHECK(c.n_rows == 30 * 9 * int(ti.n_tokens));
            CHECK(c.n_bad == 0);
            if (dt == StorageDtype::F32) CHECK(c.max_o_rel < 1e-5);
            CHECK(test::check_attention(r, 4).n_bad > 0);
        }
    }
}

TEST_CASE("capture (real model): stored logprobs give kvscope's perplexity", "[model]") {
    if (!have_model()) return;
    const LoadedModel& lm = real_model();
    std::vector<int32_t> ids = lm.tokenizer->encode(read_fixture("alice_ch1.txt"));
    REQUIRE(ids.size() > 300);
    ids.resize(300);  // two prompt chunks of the capture (256 + 44)
    const std::string path = capture_real(ids, 0, StorageDtype::F16, "real_ppl.h5");
    const TraceReader r(path);
    const std::vector<double> lp = r.logprob();
    REQUIRE(lp.size() == 300);
    CHECK(std::isnan(lp.back()));
    double nll = 0;
    for (size_t t = 0; t + 1 < lp.size(); ++t) nll -= lp[t];
    const double ppl_trace = std::exp(nll / double(lp.size() - 1));
    std::vector<double> ref_lp;
    const PerplexityResult ref = perplexity(*lm.model, ids, 300, 256, &ref_lp);
    INFO("trace " << ppl_trace << " vs perplexity() " << ref.perplexity);
    CHECK(ref.n_scored == 299);
    // The capture's vectorized float exp vs perplexity()'s double exp: ~1e-8.
    CHECK(std::fabs(ppl_trace / ref.perplexity - 1) < 1e-7);
    for (size_t t = 0; t < ref_lp.size(); ++t) REQUIRE(std::fabs(ref_lp[t] - lp[t]) < 1e-6);
}

TEST_CASE("passkey / needle prompts: the answer exactly once, at the requested depth", "[model]") {
    if (!have_model()) return;
    const Tokenizer& tok = *real_model().tokenizer;
    const std::string haystack = read_fixture("alice_ch1.txt");
    struct Case {
        std::string kind;
        int ctx;
        double depth;
        bool chat;
    };
    const std::vector<Case> cases = {
        {"passkey", 256, 0.0, false},  {"passkey", 256, 0.5, false}, {"passkey", 1000, 0.3, false},
        {"passkey", 1000, 1.0, false}, {"passkey", 600, 0.75, true}, {"needle", 400, 0.0, false},
        {"needle", 1500, 0.5, false},  {"needle", 1500, 0.9, true},  {"needle", 700, 1.0, false}};
    for (const Case& cs : cases) {
        INFO(cs.kind << " ctx " << cs.ctx << " depth " << cs.depth << (cs.chat ? " chat" : ""));
        TaskParams tp;
        tp.kind = cs.kind;
        tp.ctx = cs.ctx;
        tp.depth = cs.depth;
        tp.seed = 1234;
        tp.chat = cs.chat;
        tp.haystack = haystack;
        const TaskPrompt p = build_task_prompt(tok, tp);
        const TaskRecord& t = p.task;
        const int n = int(p.ids.size());
        // Length: at most ctx, and short of it by less than one filler sentence.
        int longest = 0;  // tokens of the longest filler sentence
        if (cs.kind == "passkey") {
            for (const char* s : {"The grass is green.", "The sky is blue.", "The sun is yellow.",
                                  "Here we go.", "There and back again."})
                longest = std::max(longest, int(tok.encode(std::string(" ") + s).size()));
        } else {
            size_t b = 0;
            for (size_t i = 0; i + 1 < haystack.size(); ++i)
                if (std::string(".!?").find(haystack[i]) != std::string::npos &&
                    std::isspace(static_cast<unsigned char>(haystack[i + 1]))) {
                    longest =
                        std::max(longest, int(tok.encode(haystack.substr(b, i + 2 - b)).size()));
                    b = i + 2;
                }
        }
        INFO("tokens " << n << ", longest sentence " << longest);
        CHECK(n <= cs.ctx);
        CHECK(n > cs.ctx - longest - 4);
        CHECK(p.ids == tok.encode(p.text, false, cs.chat));
        // The answer: exactly once in the text, and spelled by the tokens at answer_positions.
        CHECK(count_of(p.text, t.answer) == 1);
        REQUIRE_FALSE(t.answer_positions.empty());
        for (size_t i = 1; i < t.answer_positions.size(); ++i)
            CHECK(t.answer_positions[i] == t.answer_positions[i - 1] + 1);
        const std::string spelled =
            decode_range(tok, p.ids, t.answer_positions.front(), t.answer_positions.back() + 1);
        CHECK(spelled.find(t.answer) != std::string::npos);
        CHECK(spelled.size() < t.answer.size() + 4);
        // The needle sentence: its token range holds it, inside the filler.
        const std::string needle = decode_range(tok, p.ids, t.needle_begin, t.needle_end);
        CHECK(needle.find(t.needle) != std::string::npos);
        CHECK(needle.size() < t.needle.size() + 4);
        CHECK(t.needle_begin <= t.answer_positions.front());
        CHECK(t.answer_positions.back() < t.needle_end);
        CHECK(p.filler_begin <= t.needle_begin);
        CHECK(t.needle_end <= p.filler_end + 1);
        // Depth, in tokens of the filler (the needle excluded), within one sentence.
        const int filler = (p.filler_end - p.filler_begin) - (t.needle_end - t.needle_begin);
        const double before = t.needle_begin - p.filler_begin;
        INFO("needle at " << before << " of " << filler << " filler tokens");
        CHECK(std::fabs(before - cs.depth * filler) <= longest + 1);
        CHECK(t.depth == cs.depth);
        if (cs.kind == "needle") {
            CHECK_FALSE(t.needle_key.empty());
            CHECK(count_of(p.text, t.needle_key) >= 2);  // in the needle and in the question
        }
        // The same seed gives the same prompt; another seed another answer.
        CHECK(build_task_prompt(tok, tp).ids == p.ids);
        tp.seed = 99;
        CHECK(build_task_prompt(tok, tp).task.answer != t.answer);
    }
    TaskParams tp;
    tp.ctx = 20;
    CHECK_THROWS_WITH(build_task_prompt(tok, tp), Catch::Contains("too short"));
    tp.kind = "needle";
    tp.ctx = 500;
    CHECK_THROWS_WITH(build_task_prompt(tok, tp), Catch::Contains("haystack"));
}
