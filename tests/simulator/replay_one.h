// Test helper: one policy replayed on a trace file, quietly, as a unit test wants it.
#pragma once
#include <catch2/catch.hpp>
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

}  // namespace kvs::test
