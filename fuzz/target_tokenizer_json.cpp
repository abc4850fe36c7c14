// fuzz_tokenizer_json: a Hugging Face tokenizer.json (alone in its folder). Loads it and, when
// it loads, encodes and decodes sample texts.
#include "fuzz_entries.h"
#include "tokenizer_common.h"

void kvs::fuzz::tokenizer_json(const uint8_t* data, size_t size) {
    static const std::string dir = scratch_dir("tokjson");
    scratch_file("tokjson/tokenizer.json", data, size);
    attempt([&] {
        const Tokenizer tok = Tokenizer::from_hf_dir(dir);
        for (std::string_view text : kSampleTexts) exercise_tokenizer(tok, text);
    });
}
