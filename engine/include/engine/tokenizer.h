// Tokenizers of the Llama family and Qwen2, from GGUF metadata or a Hugging Face tokenizer.json.
//  - Byte-level BPE (GPT-2 style: "gpt2" in GGUF, ByteLevel in tokenizer.json) with the model's
//    pre-tokenizer regex (gpt2 / llama3 / smollm / qwen2), run through PCRE2 with UTF-8 + UCP.
//  - SentencePiece-style BPE ("llama" in GGUF, Llama 2 / TinyLlama / Mistral vocabularies):
//    scores as merge priorities, "▁" for spaces, <0xNN> byte fallback.
// Special (control) tokens are matched verbatim when parse_special is true; user-defined added
// tokens always are, as in llama.cpp and Hugging Face. decode(encode(x)) == x for any valid UTF-8
// x (with add_bos = false), except that a byte with no token in a byte-level vocabulary is
// dropped, as Hugging Face and llama.cpp do (SmolLM2 has none for the control characters 0x04,
// 0x06, 0x13, 0x14, 0x16, 0x1D and for the UTF-8 lead bytes 0xF1 / 0xF2), and a literal "▁"
// (U+2581) comes back as a space from a SentencePiece vocabulary, as in SentencePiece itself.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kvs {

class GgufFile;

struct ChatMessage {
    std::string role;  // "system", "user", "assistant"
    std::string content;
};

class Tokenizer {
  public:
    static Tokenizer from_gguf(const GgufFile& f);
    // tokenizer.json (+ tokenizer_config.json beside it, when present, for bos/eos/chat template).
    static Tokenizer from_hf_dir(const std::string& dir);

    Tokenizer(Tokenizer&&) noexcept;
    Tokenizer& operator=(Tokenizer&&) noexcept;
    ~Tokenizer();

    // add_bos: prepend bos() if the model asks for one (GGUF / tokenizer_config add_bos_token;
    // false for SmolLM2). Invalid UTF-8 throws kvs::Error.
    std::vector<int32_t> encode(std::string_view text, bool add_bos = false,
                                bool parse_special = false) const;
    std::string decode(const std::vector<int32_t>& ids) const;
    // The text of one token as it appears in decoded output (bytes, may be partial UTF-8).
    std::string token_text(int32_t id) const;
    int n_vocab() const;
    int32_t bos() const;            // -1 when none
    int32_t eos() const;            // -1 when none
    bool is_eog(int32_t id) const;  // eos, eot, <|im_end|>, ...
    // Applies the model's chat template. Known: ChatML (SmolLM2, Qwen2), Llama 2 [INST],
    // Llama 3 header tokens, Zephyr/TinyLlama <|user|>. Throws kvs::Error for an unknown one.
    std::string apply_chat_template(const std::vector<ChatMessage>& messages,
                                    bool add_generation_prompt = true) const;
    std::string kind() const;  // "bpe/smollm", "spm", ...

  private:
    static Tokenizer from_hf_dir_checked(
        const std::string& dir);  // from_hf_dir without the JSON catch
    Tokenizer();
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace kvs
