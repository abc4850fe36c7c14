#include "engine/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace kvs {

Progress::Progress(std::string label, int64_t total, bool quiet, std::string unit)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      quiet_(quiet),
      tty_(isatty(2) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_ - std::chrono::seconds(1)) {}

Progress::~Progress() {
    if (!finished_ && !quiet_ && tty_ && done_ > 0) std::fputs("\n", stderr);
}

double Progress::seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::update(int64_t done, const std::string& suffix) {
    done_ = done;
    suffix_ = suffix;
    if (quiet_ || !tty_) return;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    draw(false);
}

void Progress::finish(const std::string& suffix) {
    if (finished_) return;
    finished_ = true;
    if (!suffix.empty()) suffix_ = suffix;
    if (quiet_) return;
    draw(true);
    std::fputs("\n", stderr);
}

void Progress::draw(bool final) {
    const double s = seconds();
    const double rate = s > 0 ? double(done_) / s : 0.0;
    const double frac = total_ > 0 ? std::clamp(double(done_) / double(total_), 0.0, 1.0) : 0.0;
    constexpr int kWidth = 24;
    const int filled = int(frac * kWidth + 0.5);
    std::string bar = std::string(size_t(filled), '#') + std::string(size_t(kWidth - filled), '.');
    std::string eta = final || rate <= 0
                          ? fmt::format("{:.1f}s", s)
                          : fmt::format("{:.0f}s left", double(total_ - done_) / rate);
    std::string line =
        fmt::format("{} [{}] {}/{} {} {:.1f} {}/s {}{}{}", label_, bar, done_, total_, unit_, rate,
                    unit_, eta, suffix_.empty() ? "" : "  ", suffix_);
    fmt::print(stderr, "\r{}\x1b[K", line);
    std::fflush(stderr);
}

}  // namespace kvs
