// The engine's thread pool (engine/parallel.h): workers that spin briefly, then sleep.
//
// One job at a time: the caller publishes (fn, ctx, nt), bumps a generation counter and runs
// thread 0's share; every worker acknowledges every generation (those with an index >= nt only
// acknowledge), and the caller returns when all have. Waiting on either side is a spin of at
// most KVS_SPIN_US microseconds followed by std::atomic::wait (a futex on Linux), so a notify
// costs a system call only when somebody sleeps.
#include "engine/parallel.h"

#include <omp.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace kvs {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

int64_t spin_ns_from_env() {
    constexpr int64_t fallback = 200'000;
    const char* s = std::getenv("KVS_SPIN_US");
    if (!s || !*s) return fallback;
    char* end = nullptr;
    const long v = std::strtol(s, &end, 10);
    if (end == s || *end || v < 0) return fallback;
    return std::min<int64_t>(v, 1'000'000) * 1000;
}

// Spins until a != old for at most spin_ns, then sleeps on it; returns the new value.
template <typename T>
T wait_while_equal(const std::atomic<T>& a, T old, int64_t spin_ns) {
    T v = a.load(std::memory_order_acquire);
    if (v != old) return v;
    const auto t0 = std::chrono::steady_clock::now();
    for (int it = 1;; ++it) {
        cpu_relax();
        v = a.load(std::memory_order_acquire);
        if (v != old) return v;
        if ((it & 63) == 0 &&
            std::chrono::steady_clock::now() - t0 > std::chrono::nanoseconds(spin_ns))
            break;
    }
    for (;;) {
        a.wait(old, std::memory_order_acquire);
        v = a.load(std::memory_order_acquire);
        if (v != old) return v;
    }
}

thread_local bool t_in_pool = false;
std::atomic<bool> g_forked{false};  // a child of fork() has none of the parent's workers

class Pool {
  public:
    static Pool& get() {
        // Never destroyed: the workers are detached and may outlive static destruction.
        static Pool* p = [] {
            pthread_atfork(nullptr, nullptr, [] { g_forked.store(true); });
            return new Pool();
        }();
        return *p;
    }

    // Runs the job on nt threads; false (nothing run) when the pool is not free.
    bool try_run(int nt, detail::ParallelFn fn, void* ctx) {
        std::unique_lock<std::mutex> lock(busy_, std::try_to_lock);
        if (!lock.owns_lock()) return false;
        grow(nt - 1);
        fn_ = fn;
        ctx_ = ctx;
        nt_ = nt;
        pending_.store(uint32_t(workers_.size()), std::memory_order_relaxed);
        gen_.fetch_add(1, std::memory_order_release);
        gen_.notify_all();
        t_in_pool = true;
        struct Reset {
            ~Reset() { t_in_pool = false; }
        } reset;
        try {
            fn(ctx, 0, nt);
        } catch (...) {
            wait_done();
            throw;
        }
        wait_done();
        return true;
    }

  private:
    Pool() = default;

    void wait_done() {
        uint32_t v = pending_.load(std::memory_order_acquire);
        while (v != 0) v = wait_while_equal(pending_, v, spin_ns_);
    }

    void grow(int n) {
        while (int(workers_.size()) < n) {
            const int id = int(workers_.size()) + 1;
            const uint32_t start = gen_.load(std::memory_order_relaxed);
            workers_.emplace_back([this, id, start] { work(id, start); });
            workers_.back().detach();
        }
    }

    void work(int id, uint32_t seen) {
        t_in_pool = true;
        for (;;) {
            seen = wait_while_equal(gen_, seen, spin_ns_);
            if (id < nt_) fn_(ctx_, id, nt_);
            if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
        }
    }

    std::mutex busy_;  // held by the one caller whose job runs
    std::vector<std::thread> workers_;
    std::atomic<uint32_t> gen_{0};
    std::atomic<uint32_t> pending_{0};
    detail::ParallelFn fn_ = nullptr;
    void* ctx_ = nullptr;
    int nt_ = 1;
    const int64_t spin_ns_ = spin_ns_from_env();
};

}  // namespace

int parallel_threads() {
    return std::max(1, omp_get_max_threads());
}

namespace detail {

void parallel_run_raw(int nt, ParallelFn fn, void* ctx) {
    if (nt <= 0) nt = parallel_threads();
    const bool pool = nt > 1 && !t_in_pool && !omp_in_parallel() && !g_forked.load();
    if (pool && Pool::get().try_run(nt, fn, ctx)) return;
    // Serially, in the same slices: the results do not depend on how the slices were run.
    for (int t = 0; t < nt; ++t) fn(ctx, t, nt);
}

}  // namespace detail

void parallel_for_dynamic_raw(int64_t n, void (*fn)(void* ctx, int64_t i), void* ctx) {
    if (n <= 0) return;
    const int nt = int(std::min<int64_t>(parallel_threads(), n));
    std::atomic<int64_t> next{0};
    parallel_run(nt, [&](int, int) {
        for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < n;
             i = next.fetch_add(1, std::memory_order_relaxed))
            fn(ctx, i);
    });
}

}  // namespace kvs
