// SentencePiece-style BPE (Llama 2 / TinyLlama / Mistral vocabularies): spaces become "▁", a "▁"
// is put in front of the text, symbols start as single characters and the best pair (highest
// merged-token score for GGUF, lowest merge rank for tokenizer.json) is merged until none is
// left; characters without a token fall back to <0xNN> byte tokens.
#include <algorithm>

#include "engine/error.h"
#include "tokenizer_impl.h"

namespace kvs {

using namespace tok;

namespace {
constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581 "▁"

bool symbol_attr_ok(Attr a) {
    return a == Attr::Normal || a == Attr::UserDefined;
}
}  // namespace

void State::push_unknown(std::string_view bytes, std::vector<int32_t>& out) const {
    if (byte_fallback) {
        bool all = true;
        for (unsigned char b : bytes) all = all && byte_token[b] >= 0;
        if (all) {
            for (unsigned char b : bytes) out.push_back(byte_token[b]);
            return;
        }
    }
    if (unk >= 0) {
        if (!(fuse_unk && !out.empty() && out.back() == unk)) out.push_back(unk);
        return;
    }
    fail("{}: cannot encode byte 0x{:02X}: no token for it and no unknown token", source,
         static_cast<unsigned char>(bytes.empty() ? 0 : bytes[0]));
}

// Merge table from scores: for every token t and every split of its text into two tokens a + b,
// (a, b) -> t with priority -score(t). This gives exactly the pairs SentencePiece and llama.cpp
// would find by looking up the concatenation, precomputed once.
void State::build_score_merges(const std::vector<float>& scores) {
    merges.map.clear();
    for (size_t t = 0; t < tokens.size(); ++t) {
        if (!symbol_attr_ok(attr[t])) continue;
        const std::string_view text = tokens[t];
        size_t k = utf8_len(static_cast<unsigned char>(text[0]));
        while (k < text.size()) {
            auto a = token_to_id.find(text.substr(0, k));
            auto b = token_to_id.find(text.substr(k));
            if (a != token_to_id.end() && b != token_to_id.end() &&
                symbol_attr_ok(attr[a->second]) && symbol_attr_ok(attr[b->second])) {
                merges.add(a->second, b->second, {-double(scores[t]), int32_t(t)});
            }
            k += utf8_len(static_cast<unsigned char>(text[k]));
        }
    }
}

void State::encode_spm(std::string_view text, bool add_prefix, std::vector<int32_t>& out) const {
    std::string norm;
    norm.reserve(text.size() + text.size() / 4 + 3);
    // Legacy Prepend("▁") (and SentencePiece's dummy prefix) always adds one; the Metaspace
    // pre-tokenizer only when the text does not already start with a space.
    if (add_prefix && !(metaspace && !text.empty() && text[0] == ' ')) norm += kSpace;
    for (char c : text) {
        if (c == ' ') {
            norm += kSpace;
        } else {
            norm += c;
        }
    }

    // Words: the whole fragment, or with Metaspace(split = true) one word per "▁"-led run.
    std::vector<std::string_view> words;
    const std::string_view all = norm;
    if (metaspace_split) {
        size_t start = 0;
        for (size_t pos = all.find(kSpace, 1); pos != std::string_view::npos;
             pos = all.find(kSpace, pos + kSpace.size())) {
            if (pos > start) words.push_back(all.substr(start, pos - start));
            start = pos;
        }
        words.push_back(all.substr(start));
    } else {
        words.push_back(all);
    }

    std::vector<Symbol> syms;
    for (std::string_view w : words) {
        syms.clear();
        for (size_t i = 0; i < w.size();) {
            const size_t len = std::min(utf8_len(static_cast<unsigned char>(w[i])), w.size() - i);
            const std::string_view ch = w.substr(i, len);
            auto it = token_to_id.find(ch);
            int32_t id = -1;
            if (it != token_to_id.end() && (!score_mode || symbol_attr_ok(attr[it->second]))) {
                id = it->second;
            }
            if (id < 0 && !score_mode && byte_fallback) {
                // Hugging Face BPE: an unknown character becomes its byte tokens right away (they
                // then take part in merges like any symbol; no real vocabulary merges them).
                bool all_bytes = true;
                for (unsigned char b : ch) all_bytes = all_bytes && byte_token[b] >= 0;
                if (all_bytes) {
                    for (size_t k = 0; k < len; ++k) {
                        syms.push_back(
                            {byte_token[static_cast<unsigned char>(ch[k])], uint32_t(i + k), 1});
                    }
                    i += len;
                    continue;
                }
            }
            syms.push_back({id, uint32_t(i), uint32_t(len)});
            i += len;
        }
        bpe_merge(syms, merges);
        for (const Symbol& s : syms) {
            if (s.id >= 0) {
                out.push_back(s.id);
            } else {
                push_unknown(w.substr(s.start, s.len), out);
            }
        }
    }
}

}  // namespace kvs
