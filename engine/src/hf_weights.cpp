// Hugging Face folder reader: config.json -> ModelConfig, *.safetensors -> canonical tensors.
//
// Files read from the folder:
//   config.json                      required; llama / mistral (-> arch "llama") and qwen2
//   model.safetensors.index.json     optional; when present, exactly the shards it names are
//                                    opened and each tensor it lists must be in its shard
//   *.safetensors                    without an index: every one in the folder (sorted)
// A tensor name found in two shards is an error. HF names are mapped to the canonical names of
// engine/weights.h; names with no mapping (rotary_emb.inv_freq, ...) are ignored. With
// tie_word_embeddings, lm_head.weight is ignored even if present, so has("output.weight") is
// false. Shapes are returned as stored (PyTorch [out, in]); read() converts F16/BF16 to fp32.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <unordered_map>

#include "engine/error.h"
#include "engine/safetensors.h"
#include "engine/weights.h"

namespace kvs {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr uintmax_t kMaxJsonFileBytes = 64ull << 20;

json read_json_file(const fs::path& p, const char* what) {
    std::error_code ec;
    if (!fs::is_regular_file(p, ec)) fail("{} not found: '{}'", what, p.string());
    const uintmax_t size = fs::file_size(p, ec);
    if (ec) fail("cannot stat '{}': {}", p.string(), ec.message());
    if (size > kMaxJsonFileBytes)
        fail("'{}' is {} bytes, too large for a {}", p.string(), size, what);
    std::ifstream in(p, std::ios::binary);
    if (!in) fail("cannot open '{}'", p.string());
    std::ostringstream ss;
    ss << in.rdbuf();
    try {
        return json::parse(ss.str());
    } catch (const json::exception& e) {
        fail("'{}' is not valid JSON: {}", p.string(), e.what());
    }
}

// Typed access to config.json; a key holding null counts as absent (HF writes "head_dim": null).
class ConfigReader {
  public:
    ConfigReader(const json& j, std::string file) : j_(j), file_(std::move(file)) {}

    const json* find(const json& obj, const char* key) const {
        const auto it = obj.find(key);
        return it == obj.end() || it->is_null() ? nullptr : &*it;
    }
    const json* find(const char* key) const { return find(j_, key); }

    // A positive integer that fits an int.
    int get_int(const json& obj, const char* key, std::optional<int> def = std::nullopt) const {
        const json* v = find(obj, key);
        if (v == nullptr) {
            if (def) return *def;
            fail("{}: missing required key '{}'", file_, key);
        }
        // Non-negative literals parse as unsigned; a json built in code may hold a signed value.
        const bool ok = v->is_number_unsigned() ? v->get<uint64_t>() - 1 < uint64_t{INT32_MAX}
                                                : v->is_number_integer() && v->get<int64_t>() > 0 &&
                                                      v->get<int64_t>() <= INT32_MAX;
        if (!ok) fail("{}: '{}' = {} is not a positive integer", file_, key, v->dump());
        return static_cast<int>(v->get<int64_t>());
    }
    int get_int(const char* key, std::optional<int> def = std::nullopt) const {
        return get_int(j_, key, def);
    }

    float get_float(const json& obj, const char* key,
                    std::optional<float> def = std::nullopt) const {
        const json* v = find(obj, key);
        if (v == nullptr) {
            if (def) return *def;
            fail("{}: missing required key '{}'", file_, key);
        }
        if (!v->is_number()) fail("{}: '{}' = {} is not a number", file_, key, v->dump());
        return v->get<float>();
    }
    float get_float(const char* key, std::optional<float> def = std::nullopt) const {
        return get_float(j_, key, def);
    }

    bool get_bool(const char* key, bool def) const {
        const json* v = find(key);
        if (v == nullptr) return def;
        if (!v->is_boolean()) fail("{}: '{}' = {} is not a boolean", file_, key, v->dump());
        return v->get<bool>();
    }

    std::optional<std::string> get_string(const char* key) const {
        const json* v = find(key);
        if (v == nullptr) return std::nullopt;
        if (!v->is_string()) fail("{}: '{}' = {} is not a string", file_, key, v->dump());
        return v->get<std::string>();
    }

    // rope_scaling (transformers 4) or rope_parameters (transformers 5): {"rope_type" or "type",
    // "factor", ...}. "default" means no scaling.
    RopeScaling rope_scaling(const json& obj, const char* key) const {
        if (!obj.is_object()) fail("{}: '{}' = {} is not an object", file_, key, obj.dump());
        const json* t = find(obj, "rope_type");
        if (t == nullptr) t = find(obj, "type");
        if (t == nullptr) fail("{}: '{}' has no 'rope_type' (or 'type')", file_, key);
        if (!t->is_string()) fail("{}: '{}.rope_type' = {} is not a string", file_, key, t->dump());
        const std::string type = t->get<std::string>();
        RopeScaling rs;
        if (type == "default" || type == "none") return rs;
        if (type == "linear") {
            rs.type = "linear";
            rs.factor = get_float(obj, "factor");
        } else if (type == "llama3") {
            rs.type = "llama3";
            rs.factor = get_float(obj, "factor");
            rs.low_freq_factor = get_float(obj, "low_freq_factor");
            rs.high_freq_factor = get_float(obj, "high_freq_factor");
            rs.original_context = get_int(obj, "original_max_position_embeddings");
        } else {
            fail("{}: unsupported rope scaling type '{}' in '{}' (supported: linear, llama3)",
                 file_, type, key);
        }
        if (!(rs.factor > 0.0f)) fail("{}: '{}.factor' = {} must be > 0", file_, key, rs.factor);
        return rs;
    }

    const std::string& file() const { return file_; }

  private:
    const json& j_;
    std::string file_;
};

std::string folder_name(const std::string& dir) {
    std::error_code ec;
    fs::path p = fs::absolute(fs::path(dir), ec).lexically_normal();
    if (ec) p = fs::path(dir);
    if (p.filename().empty()) p = p.parent_path();
    return p.filename().string();
}

std::string arch_of(const std::string& s) {
    if (s == "LlamaForCausalLM" || s == "llama" || s == "MistralForCausalLM" || s == "mistral") {
        return "llama";
    }
    if (s == "Qwen2ForCausalLM" || s == "qwen2") return "qwen2";
    return "";
}

ModelConfig parse_config(const std::string& dir) {
    const fs::path file = fs::path(dir) / "config.json";
    const json j = read_json_file(file, "config.json");
    const std::string fname = file.string();
    if (!j.is_object()) fail("{}: not a JSON object", fname);
    const ConfigReader r(j, fname);

    ModelConfig c;
    // Architecture: architectures[0] when given, else model_type.
    std::string declared;
    if (const json* a = r.find("architectures")) {
        if (!a->is_array() || a->empty() || !(*a)[0].is_string()) {
            fail("{}: 'architectures' = {} is not a non-empty array of strings", fname, a->dump());
        }
        declared = (*a)[0].get<std::string>();
    } else if (auto mt = r.get_string("model_type")) {
        declared = *mt;
    } else {
        fail("{}: missing required key 'architectures' (or 'model_type')", fname);
    }
    c.arch = arch_of(declared);
    if (c.arch.empty()) {
        fail("{}: unsupported architecture '{}' (supported: llama, mistral, qwen2)", fname,
             declared);
    }
    c.qkv_bias = c.arch == "qwen2";
    if (c.arch == "llama") {
        if (r.get_bool("attention_bias", false)) {
            fail("{}: 'attention_bias': true is not supported for llama", fname);
        }
        if (r.get_bool("mlp_bias", false)) fail("{}: 'mlp_bias': true is not supported", fname);
    }
    if (c.arch == "qwen2" && r.get_bool("use_sliding_window", false)) {
        fail("{}: 'use_sliding_window': true is not supported", fname);
    }

    const auto name = r.get_string("_name_or_path");
    c.name = name && !name->empty() ? *name : folder_name(dir);

    c.n_embd = r.get_int("hidden_size");
    c.n_layer = r.get_int("num_hidden_layers");
    c.n_head = r.get_int("num_attention_heads");
    c.n_head_kv = r.get_int("num_key_value_heads", c.n_head);
    if (r.find("head_dim") == nullptr && c.n_embd % c.n_head != 0) {
        fail("{}: hidden_size {} is not a multiple of num_attention_heads {}", fname, c.n_embd,
             c.n_head);
    }
    c.head_dim = r.get_int("head_dim", c.n_embd / c.n_head);
    c.n_ff = r.get_int("intermediate_size");
    c.n_vocab = r.get_int("vocab_size");
    c.n_ctx_train = r.get_int("max_position_embeddings");
    c.rms_eps = r.get_float("rms_norm_eps");
    if (c.n_head % c.n_head_kv != 0) {
        fail("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", fname,
             c.n_head, c.n_head_kv);
    }
    if (c.head_dim % 2 != 0) fail("{}: head_dim {} must be even for RoPE", fname, c.head_dim);

    // RoPE: transformers 4 writes rope_theta / rope_scaling at the top level, transformers 5
    // writes rope_parameters {rope_theta, rope_type, ...}.
    c.rope_theta = r.get_float("rope_theta", 10000.0f);
    const json* rp = r.find("rope_parameters");
    if (rp != nullptr) {
        if (!rp->is_object())
            fail("{}: 'rope_parameters' = {} is not an object", fname, rp->dump());
        c.rope_theta = r.get_float(*rp, "rope_theta", c.rope_theta);
    }
    if (const json* rs = r.find("rope_scaling")) {
        c.rope_scaling = r.rope_scaling(*rs, "rope_scaling");
    } else if (rp != nullptr && (r.find(*rp, "rope_type") || r.find(*rp, "type"))) {
        c.rope_scaling = r.rope_scaling(*rp, "rope_parameters");
    }
    if (!(c.rope_theta > 0.0f)) fail("{}: rope_theta {} must be > 0", fname, c.rope_theta);
    c.rope_pairing = RopePairing::Half;
    c.tied_embeddings = r.get_bool("tie_word_embeddings", false);
    return c;
}

// HF name -> canonical name, or nullopt for a name kvscope does not use.
std::optional<std::string> map_hf_name(const std::string& hf) {
    static const std::map<std::string, std::string> kTop = {
        {"model.embed_tokens.weight", "token_embd.weight"},
        {"model.norm.weight", "output_norm.weight"},
        {"lm_head.weight", "output.weight"},
    };
    static const std::map<std::string, std::string> kLayer = {
        {"input_layernorm.weight", "attn_norm.weight"},
        {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"},
        {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.o_proj.weight", "attn_output.weight"},
        {"self_attn.q_proj.bias", "attn_q.bias"},
        {"self_attn.k_proj.bias", "attn_k.bias"},
        {"self_attn.v_proj.bias", "attn_v.bias"},
        {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},
        {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"},
    };
    if (const auto it = kTop.find(hf); it != kTop.end()) return it->second;

    constexpr std::string_view kPrefix = "model.layers.";
    if (hf.rfind(kPrefix, 0) != 0) return std::nullopt;
    size_t i = kPrefix.size();
    const size_t digits_begin = i;
    while (i < hf.size() && hf[i] >= '0' && hf[i] <= '9') ++i;
    const size_t n_digits = i - digits_begin;
    // Canonical decimal only ("01" would alias "1"), at most 6 digits.
    if (n_digits == 0 || n_digits > 6 || (n_digits > 1 && hf[digits_begin] == '0')) {
        return std::nullopt;
    }
    if (i >= hf.size() || hf[i] != '.') return std::nullopt;
    const auto it = kLayer.find(hf.substr(i + 1));
    if (it == kLayer.end()) return std::nullopt;
    return "blk." + hf.substr(digits_begin, n_digits) + "." + it->second;
}

class HfWeights final : public WeightSource {
  public:
    explicit HfWeights(const std::string& dir) : dir_(dir) {
        std::error_code ec;
        if (!fs::is_directory(dir, ec)) fail("Hugging Face folder not found: '{}'", dir);
        cfg_ = parse_config(dir);
        open_shards();
        map_tensors();
    }

    const ModelConfig& config() const override { return cfg_; }
    bool has(const std::string& name) const override { return by_name_.count(name) != 0; }
    std::vector<int64_t> shape(const std::string& name) const override { return get(name).shape; }
    std::vector<float> read(const std::string& name) const override {
        return st_read_fp32(get(name));
    }
    std::string describe() const override {
        std::map<StDtype, size_t> bytes;
        for (const auto& [name, ref] : by_name_) bytes[tensor(ref).dtype] += tensor(ref).nbytes;
        const char* dominant = "none";
        size_t best = 0;
        for (const auto& [t, b] : bytes) {
            if (b >= best) {
                best = b;
                dominant = st_dtype_name(t);
            }
        }
        return fmt::format("safetensors folder '{}': {} tensors in {} file(s), mostly {}", dir_,
                           by_name_.size(), files_.size(), dominant);
    }
    const std::string& path() const override { return dir_; }

  private:
    struct Ref {
        size_t file;
        size_t index;
    };

    const SafetensorsTensor& tensor(const Ref& r) const {
        return files_[r.file].tensors()[r.index];
    }

    const SafetensorsTensor& get(const std::string& name) const {
        const auto it = by_name_.find(name);
        if (it == by_name_.end()) fail("{}: tensor '{}' not found", dir_, name);
        return tensor(it->second);
    }

    void open_shards() {
        const fs::path index_path = fs::path(dir_) / "model.safetensors.index.json";
        std::error_code ec;
        if (fs::exists(index_path, ec)) {
            open_indexed(index_path);
            return;
        }
        std::vector<fs::path> paths;
        for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
            const fs::path& p = it->path();
            std::error_code ec2;
            if (p.extension() == ".safetensors" && it->is_regular_file(ec2)) paths.push_back(p);
        }
        if (ec) fail("cannot list '{}': {}", dir_, ec.message());
        if (paths.empty()) fail("no *.safetensors files in '{}'", dir_);
        std::sort(paths.begin(), paths.end());
        for (const auto& p : paths) files_.push_back(SafetensorsFile::open(p.string()));
    }

    void open_indexed(const fs::path& index_path) {
        const std::string iname = index_path.string();
        const json j = read_json_file(index_path, "safetensors index");
        const auto wm = j.is_object() ? j.find("weight_map") : j.end();
        if (!j.is_object() || wm == j.end() || !wm->is_object()) {
            fail("{}: missing 'weight_map' object", iname);
        }
        std::map<std::string, size_t> shard_index;
        std::vector<std::pair<std::string, std::string>> listed;  // tensor, shard
        for (const auto& [tname, shard] : wm->items()) {
            if (!shard.is_string()) fail("{}: weight_map['{}'] is not a string", iname, tname);
            const std::string s = shard.get<std::string>();
            if (s.empty() || s.find('/') != std::string::npos || s == "." || s == "..") {
                fail("{}: weight_map['{}'] = '{}' is not a file name in the folder", iname, tname,
                     s);
            }
            shard_index.emplace(s, 0);
            listed.emplace_back(tname, s);
        }
        if (shard_index.empty()) fail("{}: weight_map is empty", iname);
        for (auto& [s, idx] : shard_index) {
            const fs::path p = fs::path(dir_) / s;
            std::error_code ec;
            if (!fs::is_regular_file(p, ec)) {
                fail("{}: shard '{}' is missing from the folder (incomplete download?)", iname, s);
            }
            idx = files_.size();
            files_.push_back(SafetensorsFile::open(p.string()));
        }
        for (const auto& [tname, s] : listed) {
            if (files_[shard_index.at(s)].tensor(tname) == nullptr) {
                fail("{}: tensor '{}' is listed in shard '{}' but is not in it", iname, tname, s);
            }
        }
    }

    void map_tensors() {
        std::unordered_map<std::string, size_t> seen;  // HF name -> file
        for (size_t f = 0; f < files_.size(); ++f) {
            const auto& ts = files_[f].tensors();
            for (size_t i = 0; i < ts.size(); ++i) {
                const std::string& hf = ts[i].name;
                const auto [it, inserted] = seen.emplace(hf, f);
                if (!inserted) {
                    fail("{}: tensor '{}' appears in both '{}' and '{}'", dir_, hf,
                         files_[it->second].path(), files_[f].path());
                }
                if (cfg_.tied_embeddings && hf == "lm_head.weight") continue;
                auto canon = map_hf_name(hf);
                if (!canon) continue;
                if (!by_name_.emplace(*canon, Ref{f, i}).second) {
                    fail("{}: two tensors map to '{}' (second: '{}')", dir_, *canon, hf);
                }
            }
        }
    }

    std::string dir_;
    ModelConfig cfg_;
    std::vector<SafetensorsFile> files_;
    std::unordered_map<std::string, Ref> by_name_;  // canonical name -> tensor
};

}  // namespace

std::unique_ptr<WeightSource> open_hf_weights(const std::string& dir) {
    return std::make_unique<HfWeights>(dir);
}

}  // namespace kvs
