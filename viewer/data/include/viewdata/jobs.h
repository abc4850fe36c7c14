// Background jobs for the viewer: loading and computing run on worker threads while the UI keeps
// drawing. A Job carries its progress, a cancel flag and its error; the UI polls done().
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace kvs::view {

class Job {
  public:
    // Starts fn on a new thread. fn gets the job (for progress() and cancelled()). An exception
    // from fn becomes error().
    Job(std::string label, std::function<void(Job&)> fn);
    ~Job();  // cancels and joins
    Job(const Job&) = delete;
    Job& operator=(const Job&) = delete;

    const std::string& label() const { return label_; }
    void set_progress(float f) { progress_.store(f); }
    float progress() const { return progress_.load(); }  // [0, 1], or < 0 while unknown
    void cancel() { cancel_.store(true); }
    bool cancelled() const { return cancel_.load(); }
    const std::atomic<bool>& cancel_flag() const { return cancel_; }
    bool done() const { return done_.load(); }
    std::string error() const;  // "" when it succeeded (valid once done())
    double seconds() const;     // since start

  private:
    std::string label_;
    std::atomic<float> progress_{0};
    std::atomic<bool> cancel_{false}, done_{false};
    mutable std::mutex mu_;
    std::string error_;
    double t0_ = 0;
    std::thread th_;
};

}  // namespace kvs::view
