// The engine's thread pool: the forward pass's parallel loops (matmuls, attention) run here
// instead of in OpenMP regions.
//
// Why not OpenMP: a decode step opens ~250 short parallel regions (7 matmuls and the attention
// of each of 30 layers), a few tens of microseconds apart. libgomp's idle threads either spin for
// a long time (the default: fast alone, but they take the cores of whatever else runs, so
// prefill slows down under contention) or sleep at once (OMP_WAIT_POLICY=passive: every region
// pays a futex wake, and decode is 3x slower). This pool does what ggml's does: a worker spins
// for a short while (KVS_SPIN_US, default 200 microseconds) after each job, which covers the gap
// to the next region of a decode step, then sleeps until woken; and the caller never waits for
// a worker that has not started (the chunks are claimed, not assigned). The number of threads is
// OpenMP's (omp_get_max_threads(): OMP_NUM_THREADS, omp_set_num_threads), read at every call.
//
// A call made while the pool is busy (from a worker, from inside an OpenMP region, or from a
// second thread of the caller) runs serially on the calling thread: same results, no deadlock.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

namespace kvs {

// The threads a parallel_run uses now: omp_get_max_threads(), at least 1.
int parallel_threads();

namespace detail {
using ParallelFn = void (*)(void* ctx, int c, int n);
void parallel_run_raw(int n, ParallelFn fn, void* ctx);
}  // namespace detail

// Runs fn(c, n) for every chunk c = 0..n-1 (n <= 0: parallel_threads() chunks) and returns when
// all have run. The chunks are claimed one at a time by the caller and up to
// parallel_threads() - 1 workers: a chunk may run on any of them, so fn(c, n) must depend on c
// only (then the results do not depend on the thread count), and a worker that is late to wake
// (another process has the core) does not hold the caller up. More than 65535 chunks run
// serially.
template <typename F>
void parallel_run(int n, F&& fn) {
    using Fn = std::remove_reference_t<F>;
    detail::parallel_run_raw(
        n, [](void* ctx, int c, int nc) { (*static_cast<Fn*>(ctx))(c, nc); },
        const_cast<void*>(static_cast<const void*>(&fn)));
}

// Runs fn(i) for i = 0..n-1, one chunk per item (runs of items beyond 65535 items).
void parallel_for_dynamic_raw(int64_t n, void (*fn)(void* ctx, int64_t i), void* ctx);

template <typename F>
void parallel_for_dynamic(int64_t n, F&& fn) {
    using Fn = std::remove_reference_t<F>;
    parallel_for_dynamic_raw(
        n, [](void* ctx, int64_t i) { (*static_cast<Fn*>(ctx))(i); },
        const_cast<void*>(static_cast<const void*>(&fn)));
}

}  // namespace kvs
