// Private parts of kvs::Tokenizer, shared by the tokenizer_*.cpp files.
//
//   tokenizer.cpp               public API: from_gguf, special-token splitting, encode/decode
//   tokenizer_hf.cpp            from_hf_dir: tokenizer.json (+ tokenizer_config.json)
//   tokenizer_bpe.cpp           UTF-8 helpers, GPT-2 byte<->unicode map, PCRE2 pre-tokenizer,
//                               the BPE merge loop, byte-level encode of one fragment
//   tokenizer_spm.cpp           SentencePiece-style encode of one fragment
//   tokenizer_chat_template.cpp template detection and rendering (no Jinja engine)
//
// Merge priorities: a pair map (left id, right id) -> (priority, merged id), lower priority
// merges first, ties go to the leftmost pair. Byte-level and tokenizer.json vocabularies use the
// merge rank as priority (Hugging Face semantics); GGUF "llama" vocabularies use -score of the
// merged token (SentencePiece / llama.cpp semantics), precomputed from every split of every token.
#pragma once
#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/tokenizer.h"

namespace kvs::tok {

// GGUF token types (llama.cpp's llama_token_type).
enum class Attr : uint8_t { Normal, Unknown, Control, UserDefined, Unused, Byte };

// ---- UTF-8 -------------------------------------------------------------------------------------

// Length of the UTF-8 sequence starting with byte c (1 for invalid lead bytes).
inline size_t utf8_len(unsigned char c) {
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) return 2;
    if ((c & 0xF0) == 0xE0) return 3;
    if ((c & 0xF8) == 0xF0) return 4;
    return 1;
}
// Byte offset of the first invalid sequence, or npos when s is valid UTF-8 (no overlongs,
// no surrogates, nothing above U+10FFFF).
size_t utf8_invalid_at(std::string_view s);
void utf8_append(std::string& out, uint32_t cp);

// ---- GPT-2 byte <-> unicode --------------------------------------------------------------------

// byte_to_cp[b]: the code point GPT-2's byte-level alphabet uses for byte b.
const std::array<uint32_t, 256>& byte_to_cp();
// Reverse: code point -> byte, -1 when cp is not part of the alphabet.
int cp_to_byte(uint32_t cp);
// Byte-level token text -> raw bytes. Code points outside the alphabet are copied as UTF-8.
std::string byte_level_decode(std::string_view token);
std::string byte_level_encode(std::string_view raw);

// ---- pre-tokenizer -----------------------------------------------------------------------------

struct Regex;  // a compiled PCRE2 pattern (tokenizer_bpe.cpp)

// A sequence of splitting steps, each applied to every piece the previous step produced (the
// way both llama.cpp and Hugging Face's Sequence pre-tokenizer work: a later regex cannot look
// across an earlier split).
class PreTokenizer {
  public:
    // Split: matches and the text between them become separate pieces ("Isolated"), or only the
    // text between them is kept ("Removed").
    void add_split(const std::string& pattern, bool remove_matches = false);
    // ByteLevel(add_prefix_space): prepend ' ' to each piece that does not start with one.
    void add_prefix_space();
    bool empty() const { return steps_.empty(); }
    // text must be valid UTF-8. Pieces point into text or into arena.
    void run(std::string_view text, std::vector<std::string_view>& out,
             std::deque<std::string>& arena) const;

  private:
    struct Step {
        std::shared_ptr<const Regex> re;  // null: prefix-space step
        bool remove_matches = false;
    };
    std::vector<Step> steps_;
};

// The regexes used by known pre-tokenizers.
extern const char* const kRegexGpt2;    // GPT-2 / ByteLevel(use_regex), with HF's trailing \s+
extern const char* const kRegexLlama3;  // Llama 3 (tiktoken cl100k style, \p{N}{1,3})
extern const char* const kRegexQwen2;   // Qwen2 (as Llama 3 but single digits)
extern const char* const kRegexDigit;   // \p{N}, SmolLM's / Digits(individual_digits) split
extern const char* const kRegexDigits;  // \p{N}+, Digits(individual_digits = false)

// ---- BPE ---------------------------------------------------------------------------------------

struct Merge {
    double priority;  // lower merges first
    int32_t id;       // the merged token
};

struct PairMap {
    std::unordered_map<uint64_t, Merge> map;
    static uint64_t key(int32_t a, int32_t b) {
        return (uint64_t(uint32_t(a)) << 32) | uint64_t(uint32_t(b));
    }
    const Merge* find(int32_t a, int32_t b) const {
        auto it = map.find(key(a, b));
        return it == map.end() ? nullptr : &it->second;
    }
    // Keeps the first entry for a pair.
    void add(int32_t a, int32_t b, Merge m) { map.emplace(key(a, b), m); }
};

// One symbol of a word being merged: a token id (-1: cannot merge, e.g. an unknown character)
// and the byte span it covers in the word.
struct Symbol {
    int32_t id;
    uint32_t start;
    uint32_t len;
};

// Runs BPE over syms in place (merged symbols are removed).
void bpe_merge(std::vector<Symbol>& syms, const PairMap& merges);

// ---- the tokenizer state -----------------------------------------------------------------------

enum class Model { ByteLevel, Spm };
enum class Prepend { Always, First, Never };  // SPM: where "▁" is added in front of text

struct AddedToken {
    std::string text;
    int32_t id;
    bool special;  // matched only when parse_special (CONTROL / special=true)
    bool lstrip = false;
    bool rstrip = false;
};

// Everything a loaded tokenizer knows. Tokenizer::Impl is exactly this (it only exists because
// Impl is private to Tokenizer and the helpers in the other files need to name the type).
struct State {
    tok::Model model = tok::Model::ByteLevel;
    std::string kind;    // "bpe/smollm", "spm", ...
    std::string source;  // file name, for messages

    std::vector<std::string> tokens;  // vocabulary text as stored (byte-level alphabet / "▁")
    std::vector<tok::Attr> attr;
    std::vector<std::string> pieces;  // token_text(): decoded bytes of each token
    std::unordered_map<std::string_view, int32_t> token_to_id;  // views into tokens

    tok::PairMap merges;
    bool ignore_merges = false;  // whole pre-token looked up first (Llama 3)

    // Byte-level.
    tok::PreTokenizer pre;
    std::array<int32_t, 256> byte_symbol{};  // id of the single-byte token, -1 when missing

    // SPM.
    bool score_mode = false;  // merges from scores (GGUF) rather than ranks (tokenizer.json)
    bool byte_fallback = true;
    bool fuse_unk = false;
    tok::Prepend prepend = tok::Prepend::Always;
    bool metaspace = false;        // Metaspace pre-tokenizer: no "▁" prefix when one is there
    bool metaspace_split = false;  // Metaspace(split = true)
    std::array<int32_t, 256> byte_token{};  // id of <0xNN>, -1 when missing

    // Special tokens.
    std::vector<tok::AddedToken> added;
    std::array<std::vector<uint32_t>, 256> added_by_byte;  // indexes into added, longest first
    std::unordered_set<int32_t> verbatim;  // ids decoded as their raw text (added / control)
    std::unordered_set<int32_t> eog;
    int32_t bos = -1, eos = -1, unk = -1;
    bool add_bos = false;
    std::string chat_template;

    // Called once the vocabulary, attrs and added tokens are set: fills token_to_id, pieces,
    // byte tables and the added-token index. Throws on inconsistencies.
    void finalize();
    void build_score_merges(const std::vector<float>& scores);
    // eos plus the vocabulary's special end-of-turn tokens (<|im_end|>, <|eot_id|>, ...).
    void add_eog_by_name();

    // at_start: the fragment begins the text (Metaspace prepend_scheme "first").
    void encode_fragment(std::string_view text, bool at_start, std::vector<int32_t>& out) const;
    void encode_byte_level(std::string_view text, std::vector<int32_t>& out) const;
    void encode_spm(std::string_view text, bool add_prefix, std::vector<int32_t>& out) const;
    void push_unknown(std::string_view bytes, std::vector<int32_t>& out) const;
};

// Chat templates (tokenizer_chat_template.cpp).
std::string render_chat_template(const State& t, const std::vector<ChatMessage>& messages,
                                 bool add_generation_prompt);

}  // namespace kvs::tok

namespace kvs {
struct Tokenizer::Impl : tok::State {};
}  // namespace kvs
