// Fuzz entry points: one function per target, shared by the libFuzzer programs (fuzz_<target>,
// built by the `fuzz` preset) and the regression test that replays tests/fixtures/fuzz/<target>/*
// in every preset (tests/fuzz/test_fuzz_regressions.cpp).
//
// Contract: an entry feeds `data` to a parser (through a scratch file when the parser takes a
// path) and then uses whatever the parser accepted (dequantizes every tensor, encodes text, reads
// every field). A hostile input must end in one of two ways:
//   - accepted: the entry returns normally;
//   - refused: kvs::Error with a non-empty message; the entry catches it (check_error) and
//     returns normally.
// Anything else is a bug: a crash, a sanitizer report, a leak, another exception type (it
// escapes and libFuzzer reports it as a deadly signal), or an error message that is empty.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kvs::fuzz {

using Entry = void (*)(const uint8_t* data, size_t size);

struct Target {
    const char* name;  // fuzz_<name>, tests/fixtures/fuzz/<name>/
    Entry entry;
};

// Every target, in the order scripts/fuzz.sh runs them.
const std::vector<Target>& targets();
const Target* find_target(const std::string& name);

// The targets (one file each: fuzz/target_<name>.cpp).
void gguf(const uint8_t* data, size_t size);     // GGUF: header, metadata, tensors, dequant, config
void dequant(const uint8_t* data, size_t size);  // every ggml type's dequantization
void safetensors(const uint8_t* data, size_t size);     // safetensors header + tensors
void hf_config(const uint8_t* data, size_t size);       // config.json of a Hugging Face folder
void tokenizer_json(const uint8_t* data, size_t size);  // tokenizer.json, then encode/decode
void tokenizer_gguf(const uint8_t* data, size_t size);  // a GGUF vocabulary, then encode/decode
void tokenizer_text(const uint8_t* data,
                    size_t size);                      // arbitrary text through two real tokenizers
void chat_template(const uint8_t* data, size_t size);  // chat template + messages
void trace(const uint8_t* data, size_t size);          // HDF5 trace reader
void results(const uint8_t* data, size_t size);        // HDF5 results reader
void policy_spec(const uint8_t* data, size_t size);    // "name:key=value,..." and budgets

// ---- helpers for the targets ----

// Writes data to a per-process scratch file named `name` (in /dev/shm when there is one, else
// the temp directory) and returns its path. The same name is reused on every call.
std::string scratch_file(const std::string& name, const uint8_t* data, size_t size);
// A per-process scratch directory (created once), for parsers that read a folder.
std::string scratch_dir(const std::string& name);
// Runs fn; a kvs::Error is a clean refusal (its message must not be empty: abort otherwise).
// Returns true when fn returned normally.
template <class Fn>
bool attempt(Fn&& fn);
// Called by attempt() on a kvs::Error.
void check_error(const char* what);

}  // namespace kvs::fuzz

#include "engine/error.h"

template <class Fn>
bool kvs::fuzz::attempt(Fn&& fn) {
    try {
        fn();
        return true;
    } catch (const kvs::Error& e) {
        check_error(e.what());
        return false;
    }
}
