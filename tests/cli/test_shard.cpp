// --shard i/n | auto (cli/shard.h): by hand and from Slurm's job-array variables, set here by
// hand (tests/cli/slurm_sweep.sh runs a real job array).
#include <catch2/catch.hpp>
#include <map>
#include <string>

#include "engine/error.h"
#include "shard.h"

using kvs::cli::parse_shard;
using kvs::cli::Shard;

namespace {
kvs::cli::GetEnv env_of(const std::map<std::string, std::string>& vars) {
    return [vars](const char* k) -> const char* {
        auto it = vars.find(k);
        return it == vars.end() ? nullptr : it->second.c_str();
    };
}
std::string error_of(const std::string& text, const std::map<std::string, std::string>& vars) {
    try {
        parse_shard(text, env_of(vars));
    } catch (const kvs::Error& e) {
        return e.what();
    }
    return "";
}
}  // namespace

TEST_CASE("shard: i/n by hand", "[cpu]") {
    const Shard none = parse_shard("");
    CHECK((none.index == 0 && none.count == 1 && none.owns(7)));
    const Shard s = parse_shard("2/4");
    CHECK((s.index == 2 && s.count == 4 && s.source.empty()));
    CHECK((s.owns(2) && s.owns(6) && !s.owns(3) && !s.owns(0)));
    for (const char* bad : {"4/4", "-1/4", "1/0", "1", "a/b", "1/2x", "1/ 2", "/2", "1/"})
        CHECK_THAT(error_of(bad, {}), Catch::Contains("--shard must be i/n"));
}

TEST_CASE("shard: auto from Slurm's job-array variables", "[cpu]") {
    // sbatch --array=0-3: task 2 of 4.
    const Shard s = parse_shard("auto", env_of({{"SLURM_ARRAY_TASK_ID", "2"},
                                                {"SLURM_ARRAY_TASK_COUNT", "4"},
                                                {"SLURM_ARRAY_TASK_MIN", "0"},
                                                {"SLURM_ARRAY_TASK_MAX", "3"},
                                                {"SLURM_ARRAY_TASK_STEP", "1"}}));
    CHECK((s.index == 2 && s.count == 4));
    CHECK(s.source == "SLURM_ARRAY_TASK_ID=2 of 4");
    // --array=1-4: task ids 1..4 are shards 0..3.
    const Shard t = parse_shard("auto", env_of({{"SLURM_ARRAY_TASK_ID", "4"},
                                                {"SLURM_ARRAY_TASK_COUNT", "4"},
                                                {"SLURM_ARRAY_TASK_MIN", "1"},
                                                {"SLURM_ARRAY_TASK_MAX", "4"}}));
    CHECK((t.index == 3 && t.count == 4));
    // Every task of an array owns a disjoint part, and together all of the runs.
    std::map<long long, int> owner;
    for (int id = 0; id < 3; ++id) {
        const Shard k = parse_shard("auto", env_of({{"SLURM_ARRAY_TASK_ID", std::to_string(id)},
                                                    {"SLURM_ARRAY_TASK_COUNT", "3"}}));
        for (long long run = 0; run < 10; ++run)
            if (k.owns(run)) owner[run] += 1;
    }
    CHECK(owner.size() == 10);
    for (const auto& [run, n] : owner) CHECK(n == 1);
    // Without COUNT (older Slurm): from MIN and MAX.
    const Shard u = parse_shard("auto", env_of({{"SLURM_ARRAY_TASK_ID", "1"},
                                                {"SLURM_ARRAY_TASK_MIN", "0"},
                                                {"SLURM_ARRAY_TASK_MAX", "2"}}));
    CHECK((u.index == 1 && u.count == 3));
}

TEST_CASE("shard: auto outside a job array, or over an array it cannot map", "[cpu]") {
    CHECK_THAT(error_of("auto", {}), Catch::Contains("SLURM_ARRAY_TASK_ID is not set"));
    CHECK_THAT(error_of("auto", {{"SLURM_ARRAY_TASK_ID", "x"}, {"SLURM_ARRAY_TASK_COUNT", "2"}}),
               Catch::Contains("SLURM_ARRAY_TASK_ID='x' is not a non-negative integer"));
    CHECK_THAT(error_of("auto", {{"SLURM_ARRAY_TASK_ID", "1"}}),
               Catch::Contains("SLURM_ARRAY_TASK_COUNT is not"));
    CHECK_THAT(error_of("auto", {{"SLURM_ARRAY_TASK_ID", "5"}, {"SLURM_ARRAY_TASK_COUNT", "4"}}),
               Catch::Contains("outside the array [0, 3]"));
    // --array=0-6:2 (ids 0, 2, 4, 6) or --array=1,3,7: not a contiguous range.
    CHECK_THAT(error_of("auto", {{"SLURM_ARRAY_TASK_ID", "2"},
                                 {"SLURM_ARRAY_TASK_COUNT", "4"},
                                 {"SLURM_ARRAY_TASK_MIN", "0"},
                                 {"SLURM_ARRAY_TASK_MAX", "6"},
                                 {"SLURM_ARRAY_TASK_STEP", "2"}}),
               Catch::Contains("contiguous range"));
    CHECK_THAT(error_of("auto", {{"SLURM_ARRAY_TASK_ID", "3"},
                                 {"SLURM_ARRAY_TASK_COUNT", "3"},
                                 {"SLURM_ARRAY_TASK_MIN", "1"},
                                 {"SLURM_ARRAY_TASK_MAX", "7"}}),
               Catch::Contains("contiguous range"));
    CHECK_THAT(error_of("auto", {{"SLURM_ARRAY_TASK_ID", "0"}, {"SLURM_ARRAY_TASK_COUNT", "0"}}),
               Catch::Contains("must be >= 1"));
}
