// The engine's thread pool (engine/parallel.h): every chunk runs exactly once, on more than one
// thread when the pool is free and serially when it is not (nested calls, a second caller), jobs
// after the workers fell asleep still run, exceptions reach the caller, and the forward pass
// gives the same logits bit for bit at 1, 2 and 3 threads.
#include <omp.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "engine/model.h"
#include "engine/parallel.h"
#include "engine/runner.h"
#include "engine/weights.h"
#include "tiny_model.h"

using namespace kvs;

namespace {

struct Threads {
    explicit Threads(int n) : old(omp_get_max_threads()) { omp_set_num_threads(n); }
    ~Threads() { omp_set_num_threads(old); }
    int old;
};

}  // namespace

TEST_CASE("parallel_run runs every chunk once, slow chunks on more than one thread", "[cpu]") {
    Threads threads(3);
    REQUIRE(parallel_threads() == 3);
    std::vector<std::atomic<int>> calls(5);
    std::vector<std::thread::id> ids(5);
    std::atomic<int> bad_n{0};
    parallel_run(5, [&](int c, int n) {
        if (n != 5) bad_n++;
        calls[size_t(c)]++;
        ids[size_t(c)] = std::this_thread::get_id();
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
    });
    CHECK(bad_n == 0);
    for (auto& c : calls) CHECK(c == 1);
    CHECK(std::set<std::thread::id>(ids.begin(), ids.end()).size() >= 2);
}

TEST_CASE("parallel_run: many short jobs of varying width lose and repeat nothing", "[cpu]") {
    // Chunk counts change from job to job: a worker late to wake must never claim a chunk with
    // the count of another job (a first version did, under load, and deadlocked here).
    Threads threads(4);
    std::vector<int64_t> sum(7, 0);  // chunk c writes only sum[c]
    int64_t expect[7] = {0, 0, 0, 0, 0, 0, 0};
    for (int job = 0; job < 50000; ++job) {
        const int n = 1 + (job * 7919) % 7;
        parallel_run(n, [&](int c, int nc) { sum[size_t(c)] += job + nc; });
        for (int c = 0; c < n; ++c) expect[c] += job + n;
    }
    for (int c = 0; c < 7; ++c) CHECK(sum[size_t(c)] == expect[c]);
}

TEST_CASE("parallel_run wakes workers that have gone to sleep", "[cpu]") {
    Threads threads(2);
    int shared = 0;
    for (int rep = 0; rep < 5; ++rep) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));  // > the 200 us spin
        std::atomic<int> n{0};
        std::vector<std::thread::id> ids(2);
        parallel_run(2, [&](int c, int) {
            n++;
            ids[size_t(c)] = std::this_thread::get_id();
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        });
        CHECK(n == 2);
        shared += ids[0] != ids[1];
    }
    CHECK(shared >= 1);  // a sleeping worker woke up and took a chunk
}

TEST_CASE("parallel_run nested inside a job runs serially, every slice", "[cpu]") {
    Threads threads(2);
    std::vector<std::atomic<int>> inner(4);
    parallel_run(0, [&](int t, int) {
        parallel_run(2, [&](int u, int n) {
            CHECK(n == 2);
            inner[size_t(t * 2 + u)]++;
        });
    });
    for (auto& c : inner) CHECK(c == 1);
}

TEST_CASE("parallel_run from two threads at once: both complete, one of them serially", "[cpu]") {
    Threads threads(2);
    std::atomic<int64_t> total{0};
    auto caller = [&] {
        for (int i = 0; i < 2000; ++i) parallel_run(2, [&](int t, int) { total += t + 1; });
    };
    std::thread a(caller), b(caller);
    a.join();
    b.join();
    CHECK(total == 2 * 2000 * 3);
}

TEST_CASE("parallel_run uses no more threads than asked after the pool grew", "[cpu]") {
    {
        Threads four(4);
        parallel_run(0, [](int, int) {});  // the pool now has 3 workers
    }
    Threads two(2);
    for (int rep = 0; rep < 5; ++rep) {
        std::mutex mu;
        std::set<std::thread::id> ids;
        parallel_run(8, [&](int, int) {
            {
                std::lock_guard<std::mutex> l(mu);
                ids.insert(std::this_thread::get_id());
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        });
        CHECK(ids.size() <= 2);
    }
}

TEST_CASE("parallel_for_dynamic visits each index once", "[cpu]") {
    Threads threads(3);
    for (int64_t n : {0, 1, 2, 7, 1000, 200001}) {
        std::vector<std::atomic<int>> seen(size_t(n + 1));
        parallel_for_dynamic(n, [&](int64_t i) { seen[size_t(i)]++; });
        for (int64_t i = 0; i < n; ++i) CHECK(seen[size_t(i)] == 1);
        CHECK(seen[size_t(n)] == 0);
    }
}

TEST_CASE("parallel_run: an exception reaches the caller, the pool still works", "[cpu]") {
    Threads threads(2);
    std::atomic<int> ran{0};
    // Whichever thread runs chunk 0 (the caller or a worker), its exception reaches the caller;
    // chunks not claimed by then are skipped; the call returns only after the chunks that were
    // taken have finished.
    CHECK_THROWS_AS(parallel_run(8,
                                 [&](int c, int) {
                                     if (c == 0) throw std::runtime_error("chunk 0");
                                     ran++;
                                 }),
                    std::runtime_error);
    CHECK(ran <= 7);
    std::atomic<int> n{0};
    parallel_run(0, [&](int, int) { n++; });
    CHECK(n == 2);
}

TEST_CASE("the forward pass gives the same logits at 1, 2 and 3 threads", "[cpu]") {
    // Wide enough that every thread gets a slice of each matmul (slices of 16 features).
    test::TinySpec s;
    s.n_embd = 96;
    s.n_ff = 160;
    s.n_vocab = 53;
    const test::HfTensors w = test::random_weights(s, 11);
    const std::string gguf = test::write_gguf(s, w, "tiny_parallel.gguf", true);
    auto m = Model::load(*open_weights(gguf));
    const std::vector<int32_t> ids = {1, 5, 9, 2, 36, 0, 17, 17, 3, 30, 11, 52, 8};
    std::vector<std::vector<float>> logits;
    for (int nt : {1, 2, 3}) {
        Threads threads(nt);
        DenseKvCache cache(m->kv_shape(), int(ids.size()));
        std::vector<float> l;
        prefill(*m, ids.data(), int(ids.size()), 0, cache, 4, LogitsFor::All, l);
        logits.push_back(l);
    }
    REQUIRE(logits[0].size() == ids.size() * size_t(s.n_vocab));
    CHECK(logits[1] == logits[0]);
    CHECK(logits[2] == logits[0]);
}
