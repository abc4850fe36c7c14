// Which shard of a job list this process runs: "i/n" by hand, or "auto" from the scheduler's
// job-array variables. Used by `kvscope sweep --shard` (and meant for any command that splits
// a list of runs over a job array).
#pragma once
#include <functional>
#include <string>

namespace kvs::cli {

struct Shard {
    int index = 0;       // this shard, in [0, count)
    int count = 1;       // number of shards
    std::string source;  // where it came from: "" (by hand) or "SLURM_ARRAY_TASK_ID=5 (...)"
    // Runs with list index k % count == index belong to this shard.
    bool owns(long long k) const { return k % count == index; }
};

// Reads an environment variable (nullptr when unset); tests pass their own.
using GetEnv = std::function<const char*(const char*)>;

// Parses --shard: "" -> 0/1; "i/n" with 0 <= i < n; "auto" -> Slurm's job array:
// index = SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN, count = SLURM_ARRAY_TASK_COUNT (the
// array must be a contiguous range with step 1, e.g. --array=0-3 or 1-4). Throws kvs::Error
// with one line naming the flag or the variable at fault.
Shard parse_shard(const std::string& text, const GetEnv& getenv_fn = nullptr);

}  // namespace kvs::cli
