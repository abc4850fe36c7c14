// Test helper: a tiny random-weight Llama / Qwen2 / Mistral model, written as GGUF (optionally
// with Q/K rows permuted the way llama.cpp's converter does, for interleaved RoPE) and available
// as Hugging Face tensors for a safetensors folder. Used by tests/engine/test_tiny_model.cpp and
// by the capture tests. hashed_weights() gives weights that scripts/make_tiny_reference.py
// computes bit for bit, for the transformers reference (tests/fixtures/tiny_reference.*).
//
//   kvs::test::TinySpec s;                                   // llama, 2 layers, GQA 4/2, d = 6
//   const kvs::test::HfTensors w = kvs::test::random_weights(s, 7);
//   std::string gguf = kvs::test::write_gguf(s, w, "tiny.gguf", /*permute=*/true);
//   auto model = kvs::Model::load(*kvs::open_weights(gguf));
#pragma once
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "gguf_writer.h"
#include "safetensors_writer.h"

namespace kvs::test {

struct TinySpec {
    std::string arch = "llama";
    int n_vocab = 37, n_embd = 24, n_head = 4, n_head_kv = 2, n_ff = 40, n_layer = 2;
    bool tied = false, bias = false, llama3_rope = false;
    float linear_rope = 0.0f;  // linear RoPE scaling factor; 0 = none
    int head_dim() const { return n_embd / n_head; }
};

// The model's Hugging Face tensors, each filled by fill(name, n, base, scale) -> n values around
// base (1 for norm weights, 0 otherwise) with spread `scale`.
template <class Fill>
HfTensors make_weights(const TinySpec& s, Fill fill) {
    auto mat = [&](const std::string& name, int64_t r, int64_t c) {
        return std::make_pair(std::vector<int64_t>{r, c}, fill(name, r * c, 0.0f, 0.5f));
    };
    auto vec = [&](const std::string& name, int64_t n, float base) {
        return std::make_pair(std::vector<int64_t>{n}, fill(name, n, base, 0.25f));
    };
    const int d = s.head_dim();
    HfTensors w;
    auto m = [&](const std::string& name, int64_t r, int64_t c) { w[name] = mat(name, r, c); };
    auto v = [&](const std::string& name, int64_t n, float base) { w[name] = vec(name, n, base); };
    m("model.embed_tokens.weight", s.n_vocab, s.n_embd);
    v("model.norm.weight", s.n_embd, 1.0f);
    if (!s.tied) m("lm_head.weight", s.n_vocab, s.n_embd);
    for (int l = 0; l < s.n_layer; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        v(p + "input_layernorm.weight", s.n_embd, 1.0f);
        v(p + "post_attention_layernorm.weight", s.n_embd, 1.0f);
        m(p + "self_attn.q_proj.weight", s.n_head * d, s.n_embd);
        m(p + "self_attn.k_proj.weight", s.n_head_kv * d, s.n_embd);
        m(p + "self_attn.v_proj.weight", s.n_head_kv * d, s.n_embd);
        m(p + "self_attn.o_proj.weight", s.n_embd, s.n_head * d);
        if (s.bias) {
            v(p + "self_attn.q_proj.bias", s.n_head * d, 0.0f);
            v(p + "self_attn.k_proj.bias", s.n_head_kv * d, 0.0f);
            v(p + "self_attn.v_proj.bias", s.n_head_kv * d, 0.0f);
        }
        m(p + "mlp.gate_proj.weight", s.n_ff, s.n_embd);
        m(p + "mlp.up_proj.weight", s.n_ff, s.n_embd);
        m(p + "mlp.down_proj.weight", s.n_embd, s.n_ff);
    }
    return w;
}

// Normal weights (std 0.3) from std::mt19937, drawn in the order of make_weights.
inline HfTensors random_weights(const TinySpec& s, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 0.3f);
    return make_weights(s, [&](const std::string&, int64_t n, float base, float) {
        std::vector<float> v(static_cast<size_t>(n));
        for (auto& x : v) x = base + nd(rng);
        return v;
    });
}

// Weights that scripts/make_tiny_reference.py computes bit for bit: element i of tensor `name`
// is base + scale * (2u - 1), u = (splitmix64(seed ^ fnv1a64(name) + i) >> 44) / 2^20 (20 random
// bits; exact in float32 for base 0 or 1 and scale 0.25 or 0.5). Uniform in base +- scale.
inline uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}
inline uint64_t fnv1a64(const std::string& s) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
    return h;
}
inline HfTensors hashed_weights(const TinySpec& s, uint64_t seed) {
    return make_weights(s, [&](const std::string& name, int64_t n, float base, float scale) {
        const uint64_t h = seed ^ fnv1a64(name);
        std::vector<float> v(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) {
            const double u = double(splitmix64(h + uint64_t(i)) >> 44) / 1048576.0;
            v[size_t(i)] = float(double(base) + double(scale) * (2 * u - 1));  // exact
        }
        return v;
    });
}

inline nlohmann::json hf_config(const TinySpec& s) {
    nlohmann::json c = {{"architectures",
                         {s.arch == "qwen2"     ? "Qwen2ForCausalLM"
                          : s.arch == "mistral" ? "MistralForCausalLM"
                                                : "LlamaForCausalLM"}},
                        {"model_type", s.arch},
                        {"hidden_size", s.n_embd},
                        {"num_hidden_layers", s.n_layer},
                        {"num_attention_heads", s.n_head},
                        {"num_key_value_heads", s.n_head_kv},
                        {"intermediate_size", s.n_ff},
                        {"vocab_size", s.n_vocab},
                        {"max_position_embeddings", 256},
                        {"rms_norm_eps", 1e-5},
                        {"rope_theta", 500.0},
                        {"tie_word_embeddings", s.tied}};
    if (s.llama3_rope)
        c["rope_scaling"] = {{"rope_type", "llama3"},
                             {"factor", 8.0},
                             {"low_freq_factor", 1.0},
                             {"high_freq_factor", 4.0},
                             {"original_max_position_embeddings", 64}};
    if (s.linear_rope > 0) c["rope_scaling"] = {{"rope_type", "linear"}, {"factor", s.linear_rope}};
    if (s.arch == "mistral") c["sliding_window"] = nullptr;  // none (the engine has none)
    return c;
}

// llama.cpp's converter: within each head, HF rows (i, i + d/2) become GGUF rows (2i, 2i + 1).
inline std::vector<float> permute_rows(const std::vector<float>& w, int n_heads, int d, int cols) {
    std::vector<float> out(w.size());
    for (int h = 0; h < n_heads; ++h)
        for (int i = 0; i < d / 2; ++i)
            for (int j = 0; j < 2; ++j)
                std::copy_n(&w[size_t((h * d + j * (d / 2) + i) * cols)], cols,
                            &out[size_t((h * d + 2 * i + j) * cols)]);
    return out;
}

inline std::string write_gguf(const TinySpec& s, const HfTensors& w, const std::string& name,
                              bool permute) {
    GgufWriter g;
    const std::string a = s.arch + ".";
    const int d = s.head_dim();
    g.add_string("general.architecture", s.arch);
    g.add_string("general.name", "tiny");
    g.add_u32(a + "block_count", uint32_t(s.n_layer));
    g.add_u32(a + "embedding_length", uint32_t(s.n_embd));
    g.add_u32(a + "attention.head_count", uint32_t(s.n_head));
    g.add_u32(a + "attention.head_count_kv", uint32_t(s.n_head_kv));
    g.add_u32(a + "feed_forward_length", uint32_t(s.n_ff));
    g.add_u32(a + "context_length", 256);
    g.add_f32(a + "attention.layer_norm_rms_epsilon", 1e-5f);
    g.add_f32(a + "rope.freq_base", 500.0f);
    if (s.linear_rope > 0) {
        g.add_string(a + "rope.scaling.type", "linear");
        g.add_f32(a + "rope.scaling.factor", s.linear_rope);
    }
    auto put = [&](const std::string& gname, const std::string& hname, bool perm_heads = false,
                   int heads = 0) {
        const auto& [shape, v] = w.at(hname);
        std::vector<int64_t> ne(shape.rbegin(), shape.rend());
        g.add_tensor_f32(
            gname, ne,
            perm_heads ? permute_rows(v, heads, d, int(shape.size() > 1 ? shape[1] : 1)) : v);
    };
    put("token_embd.weight", "model.embed_tokens.weight");
    put("output_norm.weight", "model.norm.weight");
    if (!s.tied) put("output.weight", "lm_head.weight");
    for (int l = 0; l < s.n_layer; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".",
                          b = "blk." + std::to_string(l) + ".";
        put(b + "attn_norm.weight", p + "input_layernorm.weight");
        put(b + "ffn_norm.weight", p + "post_attention_layernorm.weight");
        put(b + "attn_q.weight", p + "self_attn.q_proj.weight", permute, s.n_head);
        put(b + "attn_k.weight", p + "self_attn.k_proj.weight", permute, s.n_head_kv);
        put(b + "attn_v.weight", p + "self_attn.v_proj.weight");
        put(b + "attn_output.weight", p + "self_attn.o_proj.weight");
        if (s.bias) {
            put(b + "attn_q.bias", p + "self_attn.q_proj.bias");
            put(b + "attn_k.bias", p + "self_attn.k_proj.bias");
            put(b + "attn_v.bias", p + "self_attn.v_proj.bias");
        }
        put(b + "ffn_gate.weight", p + "mlp.gate_proj.weight");
        put(b + "ffn_up.weight", p + "mlp.up_proj.weight");
        put(b + "ffn_down.weight", p + "mlp.down_proj.weight");
    }
    if (s.llama3_rope) {
        // llama.cpp's converter stores llama3 scaling as per-frequency divisors.
        std::vector<float> div(static_cast<size_t>(d / 2));
        const double factor = 8, lo = 1, hi = 4, orig = 64;
        for (int i = 0; i < d / 2; ++i) {
            const double f = std::pow(500.0, -2.0 * i / d), wl = 2 * M_PI / f;
            if (wl < orig / hi)
                div[size_t(i)] = 1;
            else if (wl > orig / lo)
                div[size_t(i)] = float(factor);
            else {
                const double sm = (orig / wl - lo) / (hi - lo);
                div[size_t(i)] = float(1 / ((1 - sm) / factor + sm));
            }
        }
        g.add_tensor_f32("rope_freqs.weight", {d / 2}, div);
    }
    const std::string path = temp_path(name);
    g.write(path);
    return path;
}

}  // namespace kvs::test
