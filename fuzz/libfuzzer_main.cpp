// libFuzzer's entry for one target: fuzz_<name> is this file compiled with
// -DKVS_FUZZ_ENTRY=kvs::fuzz::<name> (fuzz/CMakeLists.txt).
#include <cstddef>
#include <cstdint>

#include "fuzz_entries.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    KVS_FUZZ_ENTRY(data, size);
    return 0;
}
