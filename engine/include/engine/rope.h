// RoPE frequencies, shared by the model (which rotates q and k with them) and by what reads
// post-RoPE rows back (a trace's reader, policies that undo or average the rotation: expected
// attention's plan).
#pragma once
#include <vector>

#include "engine/config.h"

namespace kvs {

// The d/2 angular frequencies of config c: theta^(-2i/d), then c's scaling (none, linear,
// llama3). Empty for an unknown scaling type (the caller names the file in its error). A GGUF
// Llama 3 file's per-frequency divisors (`rope_freqs.weight`) are the model's to apply on top.
std::vector<float> rope_inv_freq(const ModelConfig& c);

}  // namespace kvs
