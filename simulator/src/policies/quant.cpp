// quant: uniform quantization of the whole cache, no eviction.
//   format=kivi  (KIVI, Liu et al. 2024): keys per channel over blocks of `group` tokens, values
//                per token in groups of `group` channels, at `bits`; the newest `residual`
//                tokens stay fp16 and a block is quantized once all of its tokens are older
//                than that (so between residual and residual + group - 1 tokens are fp16).
//   format=q8_0 / q4_0  llama.cpp's block formats (its -ctk/-ctv types) per token, K and V;
//                tokens older than the newest `residual` (0 = llama.cpp) are quantized.
#include <fmt/format.h>

#include "common.h"
#include "engine/error.h"
#include "kernels/quant_pack.h"

namespace kvs::sim {

namespace {

enum class Fmt { kivi, q8_0, q4_0 };

class QuantLayer final : public LayerPolicy {
  public:
    QuantLayer(Fmt f, int bits, int group, int residual, size_t n_kv)
        : f_(f), bits_(bits), group_(group), residual_(residual), done_(n_kv, 0) {}
    bool observes() const override { return false; }
    void update(int64_t, std::vector<UnitStore>& units) override {
        for (size_t g = 0; g < units.size(); ++g) {
            UnitStore& u = units[g];
            const int n = u.size();
            if (f_ == Fmt::kivi) {
                if (bits_ >= 16) continue;
                while (n - residual_ - done_[g] >= group_) {
                    u.quantize_kivi_block(done_[g], group_, bits_);
                    done_[g] += group_;
                }
            } else {
                while (n - residual_ - done_[g] > 0) {
                    u.set_block_format(done_[g], f_ == Fmt::q8_0 ? Store::q8_0 : Store::q4_0);
                    ++done_[g];
                }
            }
        }
    }

  private:
    Fmt f_;
    int bits_, group_, residual_;
    std::vector<int> done_;  // tokens quantized so far (a prefix: nothing is evicted)
};

class Quant final : public Policy {
  public:
    explicit Quant(const Params& p)
        : bits_(kvs::kernels::snap_bits(p.integer("bits"))),
          group_(p.integer("group")),
          residual_(p.integer("residual")) {
        const std::string& f = p.str("format");
        f_ = f == "kivi" ? Fmt::kivi : f == "q8_0" ? Fmt::q8_0 : Fmt::q4_0;
    }
    std::unique_ptr<LayerPolicy> make_layer(const LayerContext& c) const override {
        return std::make_unique<QuantLayer>(f_, bits_, group_, residual_, size_t(c.n_kv));
    }

  private:
    Fmt f_;
    int bits_, group_, residual_;
};

}  // namespace

PolicyEntry policy_quant() {
    PolicyEntry e;
    e.info.name = "quant";
    e.info.summary = "uniform quantization of the whole cache (KIVI, or llama.cpp q8_0 / q4_0)";
    e.info.details =
        "format=kivi: keys per channel over blocks of `group` tokens, values per token in groups "
        "of `group` channels, both at `bits` (2, 4, 8; 16 = no quantization; other widths snap "
        "to the nearest of 2/4/8/16); the newest `residual` tokens stay fp16 and a block is "
        "quantized when all its tokens are older. format=q8_0 / q4_0: llama.cpp's block formats "
        "for K and V per token (`bits` is ignored), tokens older than the newest `residual` "
        "(use residual=0 for llama.cpp's behaviour). Bytes are the formats' exact sizes "
        "(payload + fp16 scales/zero points). No eviction; same in both modes.";
    e.info.params = {param_int("bits", "4", 2, 16, "bits per element for format=kivi"),
                     param_int("group", "32", 1, 4096,
                               "group size: tokens per key group, channels per value "
                               "group"),
                     param_int("residual", "128", 0, 1e9, "newest tokens kept in fp16"),
                     param_choice("format", "kivi", {"kivi", "q8_0", "q4_0"}, "storage format")};
    e.make = [](const Params& p) { return std::make_unique<Quant>(p); };
    return e;
}

}  // namespace kvs::sim
