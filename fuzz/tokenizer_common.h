// Shared by the tokenizer targets: what a target does with a tokenizer it managed to load.
#pragma once
#include <string_view>

#include "engine/tokenizer.h"
#include "fuzz_entries.h"

namespace kvs::fuzz {

// Encodes text (with and without special-token parsing and bos), decodes the ids, and reads
// each token's text and the special ids.
inline void exercise_tokenizer(const Tokenizer& tok, std::string_view text) {
    for (bool special : {false, true})
        attempt([&] {
            const auto ids = tok.encode(text, /*add_bos=*/special, special);
            for (int32_t id : ids)
                if (id < 0 || id >= tok.n_vocab()) std::abort();  // ids must be in the vocabulary
            (void)tok.decode(ids);
            for (int32_t id : ids) (void)tok.token_text(id);
        });
    (void)tok.bos();
    (void)tok.eos();
    (void)tok.is_eog(0);
    (void)tok.kind();
}

// The texts a loaded vocabulary is tried on: ASCII, digits, spaces, accents, CJK, emoji, control
// characters, special-token look-alikes.
inline constexpr std::string_view kSampleTexts[] = {
    "Hello world! 12345 and   spaces\n\n\tend",
    "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80 <|im_start|>user<|im_end|> <s></s>",
    "",
    " ",
    "\xE2\x96\x81x",
};

}  // namespace kvs::fuzz
