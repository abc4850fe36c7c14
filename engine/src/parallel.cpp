// The engine's thread pool (engine/parallel.h): workers that spin briefly, then sleep.
//
// One job at a time, cut into chunks that the threads claim one by one: the caller publishes
// (fn, ctx, n) under a new generation, wakes the workers and claims chunks itself; a claim is a
// compare-and-swap on one word holding (generation, next chunk), so a worker that wakes late can
// never take a chunk of a later job. The caller returns once every chunk has run: it never
// waits for a worker that has not started (measured: with two processes sharing the 2 cores,
// waiting for every worker made decode 6x slower than OpenMP). Waiting is a spin of at most
// KVS_SPIN_US microseconds followed by std::atomic::wait (a futex on Linux), so a notify costs
// a system call only when somebody sleeps.
#include "engine/parallel.h"

#include <omp.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <system_error>
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

    // Runs chunks 0..n-1 of the job on up to nt threads; false (nothing run) when the pool is
    // busy with another caller's job.
    bool try_run(int nt, int n, detail::ParallelFn fn, void* ctx) {
        if (uint64_t(n) > kIndexMask) return false;  // more chunks than the word holds: serially
        std::unique_lock<std::mutex> lock(busy_, std::try_to_lock);
        if (!lock.owns_lock()) return false;
        grow(nt - 1);
        // Workers 1..nt-1 take part; the others (the pool grew for a wider job earlier) skip
        // the job and go back to sleep without spinning.
        nt_.store(nt, std::memory_order_relaxed);
        fn_.store(fn, std::memory_order_relaxed);
        ctx_.store(ctx, std::memory_order_relaxed);
        done_.store(0, std::memory_order_relaxed);
        const uint64_t gen = ((state_.load(std::memory_order_relaxed) >> kGenShift) + 1) & kGenMask;
        // Chunk 0 of job `gen` (n chunks) is next.
        state_.store(gen << kGenShift | uint64_t(n) << kNShift, std::memory_order_release);
        wake_.fetch_add(1, std::memory_order_release);
        wake_.notify_all();
        t_in_pool = true;
        struct Reset {
            ~Reset() { t_in_pool = false; }
        } reset;
        for (int c; (c = claim(gen)) >= 0;) run_chunk(gen, fn, ctx, c, uint32_t(n));
        uint32_t d = done_.load(std::memory_order_acquire);
        while (d != uint32_t(n)) d = wait_while_equal(done_, d, spin_ns_);
        if (error_) {  // the first exception of any chunk, for the caller
            std::exception_ptr e;
            std::swap(e, error_);
            std::rethrow_exception(e);
        }
        return true;
    }

  private:
    Pool() = default;

    // Takes the next chunk of job `gen`: its index, or -1 when none is left (or the job is over).
    // The job's chunk count is part of the word compared: a worker that read another job's
    // count cannot claim a chunk that does not exist (it did, in a first version: a deadlock).
    int claim(uint64_t gen) {
        uint64_t s = state_.load(std::memory_order_acquire);
        for (;;) {
            if ((s >> kGenShift) != gen || (s & kIndexMask) >= ((s >> kNShift) & kIndexMask))
                return -1;
            if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel,
                                             std::memory_order_acquire))
                return int(s & kIndexMask);
        }
    }

    // Runs chunk c; an exception is kept for the caller and the chunks nobody took yet are
    // skipped (marked done without running).
    void run_chunk(uint64_t gen, detail::ParallelFn fn, void* ctx, int c, uint32_t n) {
        try {
            fn(ctx, c, int(n));
        } catch (...) {
            {
                std::lock_guard<std::mutex> l(error_mu_);
                if (!error_) error_ = std::current_exception();
            }
            drain(gen, n);
        }
        if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == n) done_.notify_one();
    }

    // Marks every unclaimed chunk of job `gen` as done without running it.
    void drain(uint64_t gen, uint32_t n) {
        for (int c; (c = claim(gen)) >= 0;)
            if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == n) done_.notify_one();
    }

    // Adds workers up to n. When the system refuses a thread (process limit, memory), the pool
    // goes on with the workers it has: the caller takes whatever chunks they do not.
    void grow(int n) {
        while (!cannot_grow_ && int(workers_.size()) < n) {
            const uint32_t seen = wake_.load(std::memory_order_relaxed);
            const int id = int(workers_.size()) + 1;
            try {
                workers_.emplace_back([this, seen, id] { work(seen, id); });
            } catch (const std::system_error&) {
                cannot_grow_ = true;
                return;
            }
            workers_.back().detach();
        }
    }

    void work(uint32_t seen, int id) {
        t_in_pool = true;
        bool spin = true;
        for (;;) {
            seen = wait_while_equal(wake_, seen, spin ? spin_ns_ : 0);
            // Not part of this job (a narrower one than the pool): back to sleep at once. A stale
            // nt_ only makes a worker skip or join one job; the claims decide who runs what.
            spin = id < nt_.load(std::memory_order_relaxed);
            if (!spin) continue;
            const uint64_t st = state_.load(std::memory_order_acquire);
            const uint64_t gen = st >> kGenShift;
            const uint32_t n = uint32_t((st >> kNShift) & kIndexMask);
            const detail::ParallelFn fn = fn_.load(std::memory_order_relaxed);
            void* ctx = ctx_.load(std::memory_order_relaxed);
            // A successful claim proves (gen, fn, ctx, n) were one job's: the caller publishes
            // the next job only after every chunk of this one has run.
            for (int c; (c = claim(gen)) >= 0;) run_chunk(gen, fn, ctx, c, n);
        }
    }

    std::mutex busy_;  // held by the one caller whose job runs
    std::mutex error_mu_;
    std::exception_ptr error_;  // the current job's first exception (read by the caller after)
    std::vector<std::thread> workers_;
    bool cannot_grow_ = false;
    std::atomic<int> nt_{1};  // threads the current job may use (the caller and workers < nt)
    // (job generation << 32) | (its chunk count << 16) | next chunk to claim. 32 bits of
    // generation: a worker stalled between reading a job and claiming from it would have to
    // sleep through 2^32 jobs before a claim could succeed on another job's word (ABA).
    static constexpr int kGenShift = 32, kNShift = 16;
    static constexpr uint64_t kGenMask = (uint64_t(1) << 32) - 1, kIndexMask = (1u << 16) - 1;
    std::atomic<uint64_t> state_{0};
    std::atomic<uint32_t> wake_{0};  // bumped for every job: what sleeping workers wait on
    std::atomic<uint32_t> done_{0};  // chunks of the current job that have run
    std::atomic<detail::ParallelFn> fn_{nullptr};
    std::atomic<void*> ctx_{nullptr};
    const int64_t spin_ns_ = spin_ns_from_env();
};

}  // namespace

int parallel_threads() {
    return std::max(1, omp_get_max_threads());
}

namespace detail {

void parallel_run_raw(int n, ParallelFn fn, void* ctx) {
    if (n <= 0) n = parallel_threads();
    const int nt = std::min(n, parallel_threads());
    const bool pool = nt > 1 && !t_in_pool && !omp_in_parallel() && !g_forked.load();
    if (pool && Pool::get().try_run(nt, n, fn, ctx)) return;
    // Serially, the same chunks: the results do not depend on which thread ran a chunk.
    for (int c = 0; c < n; ++c) fn(ctx, c, n);
}

}  // namespace detail

void parallel_for_dynamic_raw(int64_t n, void (*fn)(void* ctx, int64_t i), void* ctx) {
    if (n <= 0) return;
    // One chunk per item, or runs of items when there are more than a job's word can count.
    constexpr int64_t kMaxChunks = 65535;
    const int64_t chunks = std::min(n, kMaxChunks);
    parallel_run(int(chunks), [&](int c, int) {
        for (int64_t i = n * c / chunks, e = n * (c + 1) / chunks; i < e; ++i) fn(ctx, i);
    });
}

}  // namespace kvs
