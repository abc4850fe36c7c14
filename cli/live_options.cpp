#include "live_options.h"

#include "engine/error.h"

namespace kvs::cli {

void add_live_options(CLI::App& app, LiveArgs& a, bool with_policy) {
    if (with_policy)
        app.add_option("--policy", a.policy,
                       "Run on a compressed cache driven by this policy spec (kvscope policies)");
    app.add_option("--mode", a.mode,
                   "stream: the policy acts after every token, prompt included (one token at a "
                   "time); prefill: the prompt goes in chunks with full attention, compressed "
                   "once as decoding starts")
        ->capture_default_str();
    app.add_option("--kv-dtype", a.kv_dtype,
                   "Full precision of the compressed cache's entries: f16 (what real systems "
                   "store) or f32 (the dense cache's, for bit-exact comparisons)")
        ->capture_default_str();
}

sim::Mode parse_mode(const std::string& s) {
    if (s == "stream") return sim::Mode::stream;
    if (s == "prefill") return sim::Mode::prefill;
    fail("--mode '{}': expected stream or prefill", s);
}

sim::Precision parse_kv_dtype(const std::string& s) {
    if (s == "f16") return sim::Precision::f16;
    if (s == "f32") return sim::Precision::f32;
    fail("--kv-dtype '{}': expected f16 or f32", s);
}

std::unique_ptr<sim::LiveCache> make_live_cache(const Model& m, const sim::PolicySpec& spec,
                                                const LiveArgs& a, int64_t capacity,
                                                int64_t prompt_len, bool record,
                                                std::vector<int32_t> tokens) {
    sim::LiveOptions o;
    o.tokens = std::move(tokens);
    o.rope.inv_freq = m.rope_inv_freq();
    o.rope.half = m.config().rope_pairing == RopePairing::Half;
    o.mode = parse_mode(a.mode);
    o.precision = parse_kv_dtype(a.kv_dtype);
    o.capacity = capacity;
    o.record = record;
    const sim::Budget b = spec.params.budget();
    if (b.set && !b.fraction && int64_t(b.value) >= capacity)
        fail("--policy {}: budget {} is not below the context of {} tokens (nothing to compress)",
             spec.given, b.text, capacity);
    if (o.mode == sim::Mode::prefill) {
        if (prompt_len < 1 || prompt_len >= capacity)
            fail(
                "--mode prefill: the prompt ({} tokens) must leave at least one token to decode "
                "(context {})",
                prompt_len, capacity);
        o.prefill_len = prompt_len;
    }
    return std::make_unique<sim::LiveCache>(m.kv_shape(), spec, o);
}

}  // namespace kvs::cli
