// Test helper: one policy replayed on a trace file, quietly, as a unit test wants it.
#pragma once
#include <catch2/catch.hpp>
#include <set>
#include <string>
#include <utility>

#include "simulator/policy.h"
#include "simulator/replay.h"

namespace kvs::test {

inline sim::RunResult replay_one(const std::string& path, const std::string& spec,
                                 sim::Mode mode = sim::Mode::stream, int checkpoints = 4,
                                 int threads = 1) {
    sim::ReplayOptions o;
    o.mode = mode;
    o.threads = threads;
    o.quiet = true;
    o.checkpoints = checkpoints;
    auto r = sim::replay_trace(path, {sim::parse_spec(spec)}, o);
    REQUIRE(r.size() == 1);
    return std::move(r[0]);
}

// The positions unit u holds at step t (from evicted_at: arrived by then, not yet evicted).
inline std::set<int> held_set(const sim::RunResult& r, size_t u, int64_t t) {
    std::set<int> s;
    const size_t T = size_t(r.n_tokens);
    for (int64_t j = 0; j <= t; ++j) {
        const int32_t e = r.evicted_at[u * T + size_t(j)];
        if (e < 0 || e > t) s.insert(int(j));
    }
    return s;
}

}  // namespace kvs::test
