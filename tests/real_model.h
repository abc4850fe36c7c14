// The real model of the [model] tests (models/SmolLM2-135M-Instruct.Q4_1.gguf, fetched by
// scripts/setup.sh): loaded once per test binary; a case without it is reported Skipped.
#pragma once
#include <filesystem>

#include "engine/runner.h"
#include "kvs_skip.h"

namespace kvs::test {

// False (and the case reported Skipped with the reason) when the model file is missing.
inline bool have_model() {
    if (std::filesystem::exists(KVS_MODEL)) return true;
    kvs_test::skip("model not found at " KVS_MODEL " (run scripts/setup.sh)");
    return false;
}

// Weights, model and tokenizer (call after have_model()).
inline const LoadedModel& real_model() {
    static LoadedModel lm = load_model(KVS_MODEL);
    return lm;
}

}  // namespace kvs::test
