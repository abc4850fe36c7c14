// One writer per output file: two kvscope processes given the same --out (two sweeps of a job
// array set up by hand, a command started twice) would both write it, and the later rename would
// silently drop the first one's runs. The second one now stops at once with one line instead.
#pragma once
#include <string>

namespace kvs::cli {

// An advisory lock (flock) on "<path>.lock", taken without waiting; the file holds the holder's
// pid and command. Released (and the file removed) by the destructor; a process that is killed
// leaves the file, but not the lock: the next command takes it. Throws kvs::Error naming the
// other process when the lock is held. An empty path locks nothing.
class OutputLock {
  public:
    explicit OutputLock(const std::string& path);
    ~OutputLock();
    OutputLock(const OutputLock&) = delete;
    OutputLock& operator=(const OutputLock&) = delete;

  private:
    std::string lock_path_;
    int fd_ = -1;
};

}  // namespace kvs::cli
