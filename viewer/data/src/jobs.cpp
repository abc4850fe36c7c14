// Background jobs (see jobs.h).
#include "viewdata/jobs.h"

#include <chrono>

namespace kvs::view {

namespace {
double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}
}  // namespace

Job::Job(std::string label, std::function<void(Job&)> fn) : label_(std::move(label)) {
    t0_ = now_s();
    th_ = std::thread([this, fn = std::move(fn)] {
        try {
            fn(*this);
        } catch (const std::exception& e) {
            std::lock_guard<std::mutex> l(mu_);
            error_ = e.what();
        } catch (...) {
            std::lock_guard<std::mutex> l(mu_);
            error_ = "unknown error";
        }
        if (cancel_.load()) {
            std::lock_guard<std::mutex> l(mu_);
            if (error_.empty()) error_ = "cancelled";
        }
        done_.store(true);
    });
}

Job::~Job() {
    cancel();
    if (th_.joinable()) th_.join();
}

std::string Job::error() const {
    std::lock_guard<std::mutex> l(mu_);
    return error_;
}

double Job::seconds() const {
    return now_s() - t0_;
}

}  // namespace kvs::view
