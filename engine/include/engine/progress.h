// A progress bar on stderr: label, bar, done/total, rate, time left, and a free-form suffix.
// Redrawn at most 10 times a second; when stderr is not a terminal it prints nothing until
// finish(), which prints one summary line. Silent when quiet.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace kvs {

class Progress {
  public:
    Progress(std::string label, int64_t total, bool quiet, std::string unit = "tok");
    ~Progress();
    void update(int64_t done, const std::string& suffix = "");
    void finish(const std::string& suffix = "");
    double seconds() const;

  private:
    void draw(bool final);
    std::string label_, unit_, suffix_;
    int64_t total_, done_ = 0;
    bool quiet_, tty_, finished_ = false;
    std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace kvs
