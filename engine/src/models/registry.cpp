// The architecture registry. To add an architecture: write models/<name>.cpp defining
// `const ArchSpec* arch_<name>()` and add one line to kArchs below (see engine/README.md).
#include <string>

#include "engine/model.h"

namespace kvs {

const ArchSpec* arch_llama();
const ArchSpec* arch_qwen2();

static const ArchSpec* const kArchs[] = {
    arch_llama(),
    arch_qwen2(),
};

const ArchSpec* find_arch(const std::string& name) {
    for (const ArchSpec* a : kArchs) {
        if (name == a->name) return a;
        for (const auto& alias : a->aliases)
            if (name == alias) return a;
    }
    return nullptr;
}

std::string supported_archs() {
    std::string s;
    for (const ArchSpec* a : kArchs) {
        s += s.empty() ? "" : ", ";
        s += a->name;
        for (const auto& alias : a->aliases) s += ", " + alias;
    }
    return s;
}

}  // namespace kvs
