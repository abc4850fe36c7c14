// --shard i/n | auto (see shard.h).
#include "shard.h"

#include <cerrno>
#include <climits>
#include <cstdlib>

#include "engine/error.h"

namespace kvs::cli {

namespace {

// A whole non-negative decimal integer, or false.
bool to_int(const std::string& s, long long& out) {
    if (s.empty() || s.size() > 12 || s.find_first_not_of("0123456789") != std::string::npos)
        return false;
    out = std::stoll(s);
    return out <= INT_MAX;
}

}  // namespace

Shard parse_shard(const std::string& text, const GetEnv& getenv_fn) {
    Shard s;
    if (text.empty()) return s;
    if (text != "auto") {
        const size_t slash = text.find('/');
        long long i = 0, n = 0;
        if (slash == std::string::npos || !to_int(text.substr(0, slash), i) ||
            !to_int(text.substr(slash + 1), n) || n < 1 || i >= n)
            fail("--shard must be i/n with 0 <= i < n, or auto (got '{}')", text);
        s.index = int(i);
        s.count = int(n);
        return s;
    }
    const GetEnv env = getenv_fn ? getenv_fn : GetEnv([](const char* k) { return std::getenv(k); });
    auto var = [&](const char* name, long long& out) {
        const char* v = env(name);
        if (!v) return false;
        if (!to_int(v, out)) fail("--shard auto: {}='{}' is not a non-negative integer", name, v);
        return true;
    };
    long long id = 0, count = 0, lo = 0, hi = 0, step = 1;
    if (!var("SLURM_ARRAY_TASK_ID", id))
        fail(
            "--shard auto: SLURM_ARRAY_TASK_ID is not set: run inside a Slurm job array (sbatch "
            "--array=0-3 ...; see scripts/slurm/), or give --shard i/n");
    const bool has_min = var("SLURM_ARRAY_TASK_MIN", lo);
    const bool has_max = var("SLURM_ARRAY_TASK_MAX", hi);
    var("SLURM_ARRAY_TASK_STEP", step);
    if (!var("SLURM_ARRAY_TASK_COUNT", count)) {
        if (!has_min || !has_max)
            fail("--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not");
        count = hi - lo + 1;
    }
    if (!has_min) lo = 0;
    if (count < 1) fail("--shard auto: SLURM_ARRAY_TASK_COUNT={} must be >= 1", count);
    // Only a contiguous range maps array indices to shards 0..count-1 one to one.
    if (step != 1 || (has_max && hi - lo + 1 != count))
        fail(
            "--shard auto: the job array must be a contiguous range like --array=0-{} (got "
            "SLURM_ARRAY_TASK_MIN={}, MAX={}, STEP={}, COUNT={})",
            count - 1, lo, has_max ? hi : lo + count - 1, step, count);
    if (id < lo || id - lo >= count)
        fail("--shard auto: SLURM_ARRAY_TASK_ID={} is outside the array [{}, {}]", id, lo,
             lo + count - 1);
    s.index = int(id - lo);
    s.count = int(count);
    s.source = fmt::format("SLURM_ARRAY_TASK_ID={} of {}", id, count);
    return s;
}

}  // namespace kvs::cli
