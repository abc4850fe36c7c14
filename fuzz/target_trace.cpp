// fuzz_trace: an HDF5 trace file (docs/trace-format.md), written to a scratch file and opened
// with TraceReader. When it opens, reads every per-layer field of the first head over the first
// tokens, every per-token dataset, and, for a small trace, replays one eviction policy over it
// (which reads every layer, head and token).
#include <algorithm>

#include "capture/trace_reader.h"
#include "fuzz_entries.h"
#include "simulator/replay.h"

void kvs::fuzz::trace(const uint8_t* data, size_t size) {
    const std::string path = scratch_file("in.trace.h5", data, size);
    attempt([&] {
        const capture::TraceReader r(path);
        const capture::TraceInfo& ti = r.info();
        const int64_t t1 = std::min<int64_t>(ti.n_tokens, 4);
        for (int layer : ti.layers) {
            (void)r.has_layer(layer);
            for (capture::Field f :
                 {capture::Field::Q, capture::Field::K, capture::Field::V, capture::Field::O})
                attempt([&] { (void)r.read(f, layer, 0, 0, t1); });
            attempt([&] { (void)r.read_lse(layer, 0, 0, t1); });
        }
        attempt([&] { (void)r.token_ids(0, t1); });
        attempt([&] { (void)r.positions(0, t1); });
        attempt([&] { (void)r.token_text(0, t1); });
        attempt([&] { (void)r.logprob(0, t1); });
        attempt([&] { (void)r.logits_lse(0, t1); });
        attempt([&] { (void)r.topk_ids(0, t1); });
        attempt([&] { (void)r.topk_logits(0, t1); });
    });
    // Replay reads the whole trace: only small ones (a hostile file may claim billions of
    // tokens in a few bytes of chunked storage; the memory that costs is the claim's, not a bug).
    attempt([&] {
        const capture::TraceReader r(path);
        if (r.info().n_tokens > 64 || r.info().layers.size() > 4) return;
        sim::ReplayOptions opt;
        opt.threads = 1;
        opt.quiet = true;
        opt.checkpoints = 2;
        (void)sim::replay_trace(path, {sim::parse_spec("h2o:budget=3")}, opt);
    });
}
