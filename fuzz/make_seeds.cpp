// fuzz_make_seeds DIR: writes the seed corpus of every fuzz target into DIR/<target>/, made of
// real small files: the repository's fixtures (tests/fixtures) and what the test writers make
// (tests/engine/gguf_writer.h, safetensors_writer.h, tiny_model.h, tests/capture/
// synthetic_trace.h), plus a results file from a replay of the synthetic trace. Nothing large
// is committed; scripts/fuzz.sh regenerates the seeds on every run.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "capture/synthetic_trace.h"
#include "engine/gguf_writer.h"
#include "engine/safetensors_writer.h"
#include "engine/spm_tiny_gguf.h"
#include "engine/tiny_model.h"
#include "engine/tokenizer.h"
#include "simulator/policy.h"
#include "simulator/replay.h"
#include "simulator/results_io.h"

namespace fs = std::filesystem;
using namespace kvs;

namespace {

fs::path g_root;
int g_count = 0;

void put(const std::string& target, const std::string& name, const std::string& bytes) {
    const fs::path dir = g_root / target;
    fs::create_directories(dir);
    std::ofstream(dir / name, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
    ++g_count;
}
std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}
std::string as_string(const std::vector<uint8_t>& v) {
    return std::string(v.begin(), v.end());
}

// Random bytes for quantized blocks, with fp16 scales kept finite and small.
std::vector<uint8_t> random_blocks(std::mt19937& rng, size_t n) {
    std::vector<uint8_t> b(n);
    for (auto& x : b) x = uint8_t(rng());
    return b;
}

void gguf_seeds() {
    std::mt19937 rng(1);
    for (const char* arch : {"llama", "qwen2"}) {
        test::TinySpec s;
        s.arch = arch;
        s.n_vocab = 8;
        s.n_embd = 8;
        s.n_head = 2;
        s.n_head_kv = 1;
        s.n_ff = 8;
        s.n_layer = 1;
        s.bias = std::string(arch) == "qwen2";
        const auto w = test::random_weights(s, 3);
        const std::string path =
            test::write_gguf(s, w, std::string("tiny_") + arch + ".gguf", true);
        put("gguf", std::string("tiny_") + arch + ".gguf", slurp(path));
    }
    // One tensor of each dequantizable type: a block or two of random bytes (fp16 scales too,
    // so NaN / inf scales are in the corpus from the start).
    test::GgufWriter g;
    g.add_string("general.architecture", "llama").add_u32("llama.block_count", 1);
    for (uint32_t type = 0; type < 40; ++type) {
        const GgmlTypeInfo* info = ggml_type_info(type);
        if (info == nullptr || !info->can_dequantize) continue;
        const int64_t n = info->block_size * 2;
        g.add_tensor_raw(std::string("t.") + info->name, type, {n, 1},
                         random_blocks(rng, 2 * info->type_size));
    }
    put("gguf", "every_type.gguf", as_string(g.bytes()));
    // Every metadata value type.
    test::GgufWriter m;
    m.add_u8("a.u8", 1).add_i8("a.i8", -1).add_u16("a.u16", 2).add_i16("a.i16", -2);
    m.add_u32("a.u32", 3).add_i32("a.i32", -3).add_u64("a.u64", 4).add_i64("a.i64", -4);
    m.add_f32("a.f32", 0.5f).add_f64("a.f64", 0.25).add_bool("a.bool", true);
    m.add_string("a.s", "text").add_string_array("a.sa", {"x", "yz"});
    m.add_i32_array("a.ia", {1, 2, 3}).add_f32_array("a.fa", {1.5f}).add_bool_array("a.ba", {true});
    m.set_version(2);
    put("gguf", "metadata_v2.gguf", as_string(m.bytes()));

    for (uint32_t type = 0; type < 40; ++type) {
        const GgmlTypeInfo* info = ggml_type_info(type);
        if (info == nullptr) continue;
        std::vector<uint8_t> b = random_blocks(rng, 2 * info->type_size);
        put("dequant", std::string(info->name) + ".bin", std::string(1, char(type)) + as_string(b));
    }
}

void safetensors_seeds() {
    const std::vector<float> v = {1.0f, -2.5f, 0.0f, 3.25f, 1e-8f, 65504.0f};
    put("safetensors", "three_dtypes.safetensors",
        test::safetensors_bytes({test::make_tensor("a", {2, 3}, v, test::Dtype::F32),
                                 test::make_tensor("b", {6}, v, test::Dtype::F16),
                                 test::make_tensor("c", {3, 1, 2}, v, test::Dtype::BF16)},
                                {{"format", "pt"}}));
    put("safetensors", "scalar_and_empty.safetensors",
        test::safetensors_bytes({test::make_tensor("s", {}, {7.0f}, test::Dtype::F32),
                                 test::make_tensor("e", {0, 4}, {}, test::Dtype::F16)}));
    test::TinySpec s;
    int i = 0;
    for (const char* arch : {"llama", "qwen2", "mistral"}) {
        s.arch = arch;
        s.llama3_rope = i == 1;
        s.linear_rope = i == 2 ? 2.0f : 0.0f;
        auto c = test::hf_config(s);
        put("hf_config", std::string(arch) + ".json", c.dump(1));
        ++i;
    }
}

// A small byte-level BPE tokenizer.json and the same vocabulary as a GGUF ("gpt2").
void tokenizer_seeds() {
    put("tokenizer_json", "spm_tiny.json",
        slurp(KVS_FIXTURES "/tokenizer_spm_tiny/tokenizer.json"));
    put("tokenizer_gguf", "spm_tiny.gguf",
        as_string(kvs::test::spm_tiny_gguf(KVS_FIXTURES "/tokenizer_spm_tiny")));
    // Byte-level alphabet (printable ASCII stands for itself) + a few merges + added tokens.
    std::vector<std::string> vocab;
    for (char c = '!'; c <= '~'; ++c) vocab.push_back(std::string(1, c));
    vocab.push_back("\xC4\xA0");  // "Ġ" = space
    vocab.push_back("\xC4\x8A");  // "Ċ" = newline
    const std::vector<std::string> merges = {"h e", "l l", "he ll", "hell o", "\xC4\xA0 w"};
    for (const auto& m : merges) {
        const auto sp = m.find(' ');
        vocab.push_back(m.substr(0, sp) + m.substr(sp + 1));
    }
    vocab.push_back("<|im_start|>");
    vocab.push_back("<|im_end|>");
    nlohmann::ordered_json v = nlohmann::ordered_json::object();
    for (size_t i = 0; i < vocab.size(); ++i) v[vocab[i]] = i;
    const int n = int(vocab.size());
    nlohmann::ordered_json j = {
        {"version", "1.0"},
        {"added_tokens",
         {{{"id", n - 2}, {"content", "<|im_start|>"}, {"special", true}},
          {{"id", n - 1}, {"content", "<|im_end|>"}, {"special", true}}}},
        {"normalizer", nullptr},
        {"pre_tokenizer",
         {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
        {"post_processor", nullptr},
        {"decoder", {{"type", "ByteLevel"}}},
        {"model", {{"type", "BPE"}, {"vocab", v}, {"merges", merges}}}};
    put("tokenizer_json", "byte_level.json", j.dump(1));

    test::GgufWriter g;
    g.add_string("tokenizer.ggml.model", "gpt2").add_string("tokenizer.ggml.pre", "smollm");
    g.add_string_array("tokenizer.ggml.tokens", vocab);
    std::vector<int32_t> types(vocab.size(), 1);
    types[size_t(n - 2)] = types[size_t(n - 1)] = 3;
    g.add_i32_array("tokenizer.ggml.token_type", types);
    g.add_string_array("tokenizer.ggml.merges", merges);
    g.add_u32("tokenizer.ggml.bos_token_id", uint32_t(n - 2));
    g.add_u32("tokenizer.ggml.eos_token_id", uint32_t(n - 1));
    g.add_string("tokenizer.chat_template",
                 "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ "
                 "message['content'] }}<|im_end|>\n{% endfor %}");
    put("tokenizer_gguf", "byte_level.gguf", as_string(g.bytes()));

    put("tokenizer_text", "alice.txt", slurp(KVS_FIXTURES "/alice_ch1.txt").substr(0, 600));
    put("tokenizer_text", "mixed.txt",
        "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC 123 4567 \xF0\x9F\x98\x80  \n\n\t "
        "<|im_start|>user\nhi<|im_end|>");
    put("tokenizer_text", "bad_utf8.txt", "ok \xC3\x28 \xED\xA0\x80 \xF4\x90\x80\x80");
    put("tokenizer_text", "specials.txt", "<|im_start|><|im_end|><s></s><unk><|endoftext|>");

    // Chat templates: the fixtures' own, and the other known styles.
    auto tpl = [](const fs::path& p) {
        return nlohmann::json::parse(slurp(p)).value("chat_template", std::string());
    };
    const std::string chat = std::string("system") + '\0' + "Be brief." + '\0' + "user" + '\0' +
                             "Hello" + '\0' + "assistant" + '\0' + "Hi!" + '\0' + "user" + '\0' +
                             "Bye";
    put("chat_template", "smollm2.txt",
        tpl(KVS_FIXTURES "/tokenizer_smollm2/tokenizer_config.json") + '\0' + chat);
    put("chat_template", "llama2.txt",
        tpl(KVS_FIXTURES "/tokenizer_spm_tiny/tokenizer_config.json") + '\0' + chat);
    put("chat_template", "llama3.txt",
        std::string("{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + "
                    "message['content'] | trim + '<|eot_id|>' }}") +
            '\0' + chat);
    put("chat_template", "zephyr.txt",
        std::string("{% for message in messages %}{% if message['role'] == 'user' %}{{ "
                    "'<|user|>\n' + message['content'] + eos_token }}{% endif %}{% endfor %}") +
            '\0' + chat);
}

void trace_and_results_seeds() {
    const std::string tmp = test::temp_path("seed_trace.h5");
    // gzip only: an uncompressed trace allocates whole chunks (~900 KB for 6 tokens), too
    // large for the fuzzer to mutate quickly.
    test::write_synthetic_trace(tmp, 6, 1);
    put("trace", "synthetic_gzip.h5", slurp(tmp));
    sim::ReplayOptions opt;
    opt.threads = 1;
    opt.quiet = true;
    opt.checkpoints = 2;
    const auto runs = sim::replay_trace(
        tmp, {sim::parse_spec("h2o:budget=3"), sim::parse_spec("quant:bits=4")}, opt);
    const std::string res = test::temp_path("seed_results.h5");
    sim::write_results(res, runs, "fuzz_make_seeds");
    put("results", "two_runs.h5", slurp(res));

    int i = 0;
    for (const auto& e : sim::policy_registry()) {
        put("policy_spec", e.info.name + ".txt", sim::parse_spec(e.info.name, false).canonical);
        if (e.info.takes_budget)
            put("policy_spec", e.info.name + "_b.txt", e.info.name + ":budget=0.25");
        ++i;
    }
    put("policy_spec", "budget.txt", "128");
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: fuzz_make_seeds DIR\n";
        return 2;
    }
    g_root = argv[1];
    try {
        gguf_seeds();
        safetensors_seeds();
        tokenizer_seeds();
        trace_and_results_seeds();
    } catch (const std::exception& e) {
        std::cerr << "fuzz_make_seeds: " << e.what() << "\n";
        return 1;
    }
    std::cout << g_count << " seeds in " << g_root.string() << "\n";
    return 0;
}
