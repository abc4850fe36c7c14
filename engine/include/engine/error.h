// Two tiers of errors (see docs/CONVENTIONS in ../shared/design):
//  - kvs::Error: untrusted input (model files, traces, CLI). The message is one line that names
//    the file / field / offset and what was expected. The CLI prints it and exits non-zero.
//  - KVS_ASSERT: a broken internal invariant (a bug), reported with file:line, then abort.
#pragma once
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace kvs {

struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
    throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace kvs

#define KVS_ASSERT(cond)                                                                    \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            std::fprintf(stderr, "%s:%d: internal error: assertion failed: %s\n", __FILE__, \
                         __LINE__, #cond);                                                  \
            std::abort();                                                                   \
        }                                                                                   \
    } while (0)
