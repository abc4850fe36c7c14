// WeightSource over a GGUF file: the ModelConfig from `<arch>.*` metadata, tensors by their
// GGUF names (already canonical), dequantized to fp32 on read.
#include <map>

#include "engine/error.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/weights.h"

namespace kvs {

namespace {

class GgufWeights final : public WeightSource {
  public:
    explicit GgufWeights(GgufFile f) : f_(std::move(f)) {
        const std::string arch = f_.get_string("general.architecture");
        const ArchSpec* spec = find_arch(arch);
        if (!spec)
            fail("{}: unsupported architecture '{}' (supported: {})", f_.path(), arch,
                 supported_archs());
        const std::string a = arch + ".";
        cfg_.arch = spec->name;
        cfg_.name = f_.get_string_opt("general.name").value_or(arch);
        cfg_.n_layer = int(f_.get_int(a + "block_count"));
        cfg_.n_embd = int(f_.get_int(a + "embedding_length"));
        cfg_.n_head = int(f_.get_int(a + "attention.head_count"));
        cfg_.n_head_kv = int(f_.get_int_opt(a + "attention.head_count_kv").value_or(cfg_.n_head));
        cfg_.n_ff = int(f_.get_int(a + "feed_forward_length"));
        cfg_.n_ctx_train = int(f_.get_int_opt(a + "context_length").value_or(0));
        cfg_.rms_eps = float(f_.get_float(a + "attention.layer_norm_rms_epsilon"));
        cfg_.rope_theta = float(f_.get_float_opt(a + "rope.freq_base").value_or(10000.0));
        if (cfg_.n_head <= 0) fail("{}: {}attention.head_count must be positive", f_.path(), a);
        cfg_.head_dim = int(f_.get_int_opt(a + "attention.key_length")
                                .value_or(f_.get_int_opt(a + "rope.dimension_count")
                                              .value_or(cfg_.n_embd / cfg_.n_head)));
        if (auto t = f_.get_string_opt(a + "rope.scaling.type"); t && *t != "none") {
            cfg_.rope_scaling.type = *t;
            cfg_.rope_scaling.factor =
                float(f_.get_float_opt(a + "rope.scaling.factor").value_or(1));
            cfg_.rope_scaling.original_context =
                int(f_.get_int_opt(a + "rope.scaling.original_context_length").value_or(8192));
        }
        const GgufTensor* embd = f_.tensor("token_embd.weight");
        if (!embd || embd->ne.size() != 2)
            fail("{}: missing or malformed tensor 'token_embd.weight'", f_.path());
        cfg_.n_vocab = int(embd->ne[1]);
        cfg_.rope_pairing = spec->gguf_rope_pairing;
        cfg_.qkv_bias = spec->qkv_bias;
        cfg_.tied_embeddings = f_.tensor("output.weight") == nullptr;
        std::map<std::string, int> types;
        for (const auto& t : f_.tensors()) ++types[ggml_type_info(uint32_t(t.type))->name];
        for (const auto& [n, cnt] : types) type_summary_ += fmt::format(" {}x{}", cnt, n);
    }

    const ModelConfig& config() const override { return cfg_; }
    bool has(const std::string& name) const override { return f_.tensor(name) != nullptr; }
    std::vector<int64_t> shape(const std::string& name) const override {
        const GgufTensor& t = get(name);
        return {t.ne.rbegin(), t.ne.rend()};
    }
    std::vector<float> read(const std::string& name) const override {
        const GgufTensor& t = get(name);
        const GgmlTypeInfo* info = ggml_type_info(uint32_t(t.type));
        if (!info || !info->can_dequantize)
            fail("{}: tensor '{}' has unsupported type {}", f_.path(), name,
                 info ? info->name : std::to_string(uint32_t(t.type)));
        std::vector<float> out(size_t(t.n_elements));
        dequantize(t.type, t.data, out.data(), t.n_elements);
        return out;
    }
    std::optional<RawTensorView> raw(const std::string& name) const override {
        const GgufTensor& t = get(name);
        if (t.ne.empty() || t.ne[0] <= 0) return std::nullopt;
        return RawTensorView{t.type, t.data, ggml_row_bytes(t.type, t.ne[0])};
    }
    std::string describe() const override {
        return fmt::format("GGUF v{} '{}' ({}; tensors:{})", f_.version(), f_.path(), cfg_.name,
                           type_summary_);
    }
    const std::string& path() const override { return f_.path(); }
    const GgufFile& file() const { return f_; }

  private:
    const GgufTensor& get(const std::string& name) const {
        const GgufTensor* t = f_.tensor(name);
        if (!t) fail("{}: missing tensor '{}'", f_.path(), name);
        return *t;
    }
    GgufFile f_;
    ModelConfig cfg_;
    std::string type_summary_;
};

}  // namespace

std::unique_ptr<WeightSource> open_gguf_weights(const std::string& path) {
    return std::make_unique<GgufWeights>(GgufFile::open(path));
}

}  // namespace kvs
