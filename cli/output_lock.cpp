#include "output_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common.h"
#include "engine/error.h"
#include "simulator/results_io.h"

namespace kvs::cli {

OutputLock::OutputLock(const std::string& path) {
    if (path.empty()) return;
    // A missing directory, a directory under the name, a read-only or full file system: the
    // same one line every command gives (results_io.h).
    sim::check_output_path(path);
    lock_path_ = path + ".lock";
    // The file can be removed by its holder between our open and our flock: then we hold a lock
    // on a file nobody else sees. Retry until the locked file is the one at the path.
    for (int attempt = 0; attempt < 100; ++attempt) {
        const int fd = ::open(lock_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) fail("cannot write '{}': {}", path, std::strerror(errno));
        if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
            const int err = errno;
            char buf[512] = {0};
            const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
            ::close(fd);
            if (err != EWOULDBLOCK) fail("cannot lock '{}': {}", lock_path_, std::strerror(err));
            std::string holder = n > 0 ? std::string(buf, size_t(n)) : "another process";
            while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' '))
                holder.pop_back();
            for (char& c : holder)
                if (c == '\n') c = ' ';
            fail(
                "'{}' is being written by another kvscope ({}): wait for it, or give another "
                "output",
                path, holder);
        }
        struct stat a {
        }, b{};
        if (::fstat(fd, &a) == 0 && ::stat(lock_path_.c_str(), &b) == 0 && a.st_ino == b.st_ino &&
            a.st_dev == b.st_dev) {
            fd_ = fd;
            const std::string me = "pid " + std::to_string(::getpid()) + ": " + command_line();
            if (::ftruncate(fd_, 0) == 0) {
                const ssize_t w = ::pwrite(fd_, me.data(), me.size(), 0);
                (void)w;  // the holder's description is a courtesy; the lock is what counts
            }
            return;
        }
        ::close(fd);
    }
    fail("cannot lock '{}': it keeps being replaced", lock_path_);
}

OutputLock::~OutputLock() {
    if (fd_ < 0) return;
    ::unlink(lock_path_.c_str());
    ::close(fd_);
}

}  // namespace kvs::cli
