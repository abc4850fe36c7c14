// fuzz_tokenizer_gguf: a GGUF file holding a vocabulary (tokenizer.ggml.*). Loads the tokenizer
// from it and, when it loads, encodes and decodes sample texts and renders a chat.
#include "engine/gguf.h"
#include "fuzz_entries.h"
#include "tokenizer_common.h"

void kvs::fuzz::tokenizer_gguf(const uint8_t* data, size_t size) {
    const std::string path = scratch_file("tok.gguf", data, size);
    attempt([&] {
        const GgufFile f = GgufFile::open(path);
        const Tokenizer tok = Tokenizer::from_gguf(f);
        for (std::string_view text : kSampleTexts) exercise_tokenizer(tok, text);
        attempt([&] { (void)tok.apply_chat_template({{"user", "hi"}, {"assistant", "yo"}}); });
    });
}
