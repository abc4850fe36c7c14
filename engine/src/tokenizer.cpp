// kvs::Tokenizer: the public API, loading from GGUF metadata, special-token splitting and the
// encode / decode drivers. Model-specific work lives in tokenizer_bpe.cpp (byte-level BPE, the
// pre-tokenizer), tokenizer_spm.cpp (SentencePiece-style BPE), tokenizer_hf.cpp (tokenizer.json)
// and tokenizer_chat_template.cpp.
#include "engine/tokenizer.h"

#include <fmt/format.h>

#include <algorithm>

#include "engine/error.h"
#include "engine/gguf.h"
#include "tokenizer_impl.h"

namespace kvs {

using namespace tok;

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

// ---- shared set-up -----------------------------------------------------------------------------

namespace {

bool is_byte_token_text(std::string_view t, unsigned& value) {
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    };
    if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return false;
    const int hi = hex(t[3]), lo = hex(t[4]);
    if (hi < 0 || lo < 0) return false;
    value = unsigned(hi * 16 + lo);
    return true;
}

std::string spm_piece(std::string_view t) {
    std::string out;
    out.reserve(t.size());
    for (size_t i = 0; i < t.size();) {
        if (t.compare(i, 3, "\xE2\x96\x81") == 0) {
            out += ' ';
            i += 3;
        } else {
            out += t[i++];
        }
    }
    return out;
}

// Tokens that end a generation turn when they are special tokens of the vocabulary.
constexpr std::string_view kEogNames[] = {
    "<|im_end|>", "<|eot_id|>", "<|endoftext|>", "</s>",    "<|end_of_text|>",
    "<|end|>",    "<|eom_id|>", "<end_of_turn>", "<|EOT|>", "<EOT>",
};

}  // namespace

void State::finalize() {
    const size_t n = tokens.size();
    KVS_ASSERT(attr.size() == n);
    token_to_id.clear();
    token_to_id.reserve(n * 2);
    for (size_t i = 0; i < n; ++i) {
        if (!tokens[i].empty()) token_to_id.emplace(tokens[i], int32_t(i));
    }

    verbatim.clear();
    for (size_t i = 0; i < n; ++i) {
        if (attr[i] == Attr::Control || attr[i] == Attr::UserDefined || attr[i] == Attr::Unknown) {
            verbatim.insert(int32_t(i));
        }
    }
    for (const AddedToken& a : added) verbatim.insert(a.id);

    byte_token.fill(-1);
    byte_symbol.fill(-1);
    pieces.assign(n, {});
    for (size_t i = 0; i < n; ++i) {
        const std::string& t = tokens[i];
        unsigned b = 0;
        if (verbatim.count(int32_t(i))) {
            pieces[i] = t;
        } else if (model == Model::ByteLevel) {
            pieces[i] = byte_level_decode(t);
        } else if (is_byte_token_text(t, b)) {
            pieces[i] = std::string(1, char(b));
            if (byte_token[b] < 0) byte_token[b] = int32_t(i);
        } else {
            pieces[i] = spm_piece(t);
        }
    }
    if (model == Model::ByteLevel) {
        for (int b = 0; b < 256; ++b) {
            auto it = token_to_id.find(byte_level_encode(std::string(1, char(b))));
            if (it != token_to_id.end()) byte_symbol[b] = it->second;
        }
    }

    for (auto& v : added_by_byte) v.clear();
    for (size_t k = 0; k < added.size(); ++k) {
        if (added[k].text.empty()) continue;
        added_by_byte[static_cast<unsigned char>(added[k].text[0])].push_back(uint32_t(k));
    }
    for (auto& v : added_by_byte) {
        std::stable_sort(v.begin(), v.end(), [&](uint32_t a, uint32_t b) {
            return added[a].text.size() > added[b].text.size();
        });
    }
}

void State::add_eog_by_name() {
    if (eos >= 0) eog.insert(eos);
    for (std::string_view name : kEogNames) {
        auto it = token_to_id.find(name);
        if (it != token_to_id.end() && verbatim.count(it->second)) eog.insert(it->second);
    }
}

// ---- GGUF --------------------------------------------------------------------------------------

namespace {

const GgufValue& need_array(const GgufFile& f, std::string_view key, GgufType elem,
                            const char* what) {
    const GgufValue* v = f.find(key);
    if (!v) fail("{}: no {} in the metadata (the file carries no usable tokenizer)", f.path(), key);
    if (v->type != GgufType::ARRAY) fail("{}: {} is not an array", f.path(), key);
    const bool ok = elem == GgufType::STRING ? v->elem_type == GgufType::STRING
                    : elem == GgufType::F32
                        ? (v->elem_type == GgufType::F32 || v->elem_type == GgufType::F64)
                        : (v->elem_type != GgufType::STRING && v->elem_type != GgufType::F32 &&
                           v->elem_type != GgufType::F64 && v->elem_type != GgufType::ARRAY);
    if (!ok) fail("{}: {} is not an array of {}", f.path(), key, what);
    return *v;
}

int32_t token_id_opt(const GgufFile& f, std::string_view key, size_t n_vocab) {
    const auto v = f.get_int_opt(key);
    if (!v) return -1;
    if (*v < 0 || *v >= int64_t(n_vocab)) {
        fail("{}: {} = {} is outside the vocabulary [0, {})", f.path(), key, *v, n_vocab);
    }
    return int32_t(*v);
}

}  // namespace

Tokenizer Tokenizer::from_gguf(const GgufFile& f) {
    Tokenizer tk;
    Impl& t = *tk.impl_;
    t.source = f.path();

    const auto model = f.get_string_opt("tokenizer.ggml.model");
    if (!model)
        fail("{}: no tokenizer.ggml.model in the metadata (no tokenizer in this file)", f.path());
    const GgufValue& toks = need_array(f, "tokenizer.ggml.tokens", GgufType::STRING, "strings");
    const size_t n = toks.strs.size();
    if (n == 0) fail("{}: tokenizer.ggml.tokens is empty", f.path());
    if (n > size_t(INT32_MAX)) fail("{}: tokenizer.ggml.tokens has {} entries", f.path(), n);
    t.tokens = toks.strs;
    t.attr.assign(n, Attr::Normal);
    if (f.find("tokenizer.ggml.token_type")) {
        const GgufValue& types =
            need_array(f, "tokenizer.ggml.token_type", GgufType::I32, "integers");
        if (types.ints.size() != n) {
            fail("{}: tokenizer.ggml.token_type has {} entries for {} tokens", f.path(),
                 types.ints.size(), n);
        }
        for (size_t i = 0; i < n; ++i) {
            switch (types.ints[i]) {
                case 2:
                    t.attr[i] = Attr::Unknown;
                    break;
                case 3:
                    t.attr[i] = Attr::Control;
                    break;
                case 4:
                    t.attr[i] = Attr::UserDefined;
                    break;
                case 5:
                    t.attr[i] = Attr::Unused;
                    break;
                case 6:
                    t.attr[i] = Attr::Byte;
                    break;
                default:
                    t.attr[i] = Attr::Normal;
                    break;  // 0 undefined, 1 normal
            }
        }
    }
    for (size_t i = 0; i < n; ++i) {
        if (t.tokens[i].empty()) continue;
        if (t.attr[i] == Attr::Control || t.attr[i] == Attr::Unknown) {
            t.added.push_back({t.tokens[i], int32_t(i), true});
        } else if (t.attr[i] == Attr::UserDefined) {
            t.added.push_back({t.tokens[i], int32_t(i), false});
        }
    }

    if (*model == "gpt2") {
        t.model = Model::ByteLevel;
        t.byte_fallback = false;
        const std::string pre = f.get_string_opt("tokenizer.ggml.pre").value_or("default");
        std::string name;
        if (pre == "default" || pre == "gpt2") {
            t.pre.add_split(kRegexGpt2);
            name = "gpt2";
        } else if (pre == "smollm") {
            t.pre.add_split(kRegexDigit);
            t.pre.add_split(kRegexGpt2);
            name = "smollm";
        } else if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") {
            t.pre.add_split(kRegexLlama3);
            t.ignore_merges = true;
            name = "llama3";
        } else if (pre == "qwen2" || pre == "qwen2.5" || pre == "deepseek-r1-qwen") {
            t.pre.add_split(kRegexQwen2);
            name = "qwen2";
        } else {
            fail(
                "{}: tokenizer.ggml.pre = '{}' is not supported (known: default, gpt2, smollm, "
                "llama-bpe, llama3, qwen2)",
                f.path(), pre);
        }
        t.kind = "bpe/" + name;
        t.finalize();
        const GgufValue& merges =
            need_array(f, "tokenizer.ggml.merges", GgufType::STRING, "strings");
        for (size_t i = 0; i < merges.strs.size(); ++i) {
            const std::string& m = merges.strs[i];
            const size_t sp = m.find(' ', 1);
            if (sp == std::string::npos) {
                fail("{}: tokenizer.ggml.merges[{}] = '{}' is not 'left right'", f.path(), i, m);
            }
            const std::string_view l = std::string_view(m).substr(0, sp);
            const std::string_view r = std::string_view(m).substr(sp + 1);
            auto a = t.token_to_id.find(l);
            auto b = t.token_to_id.find(r);
            auto c = t.token_to_id.find(std::string(l) + std::string(r));
            if (a == t.token_to_id.end() || b == t.token_to_id.end() || c == t.token_to_id.end()) {
                fail(
                    "{}: tokenizer.ggml.merges[{}] = '{}' uses a token missing from the vocabulary",
                    f.path(), i, m);
            }
            t.merges.add(a->second, b->second, {double(i), c->second});
        }
        t.add_bos = f.get_int_opt("tokenizer.ggml.add_bos_token").value_or(0) != 0;
    } else if (*model == "llama") {
        t.model = Model::Spm;
        t.kind = "spm";
        t.score_mode = true;
        t.byte_fallback = true;
        const GgufValue& sc = need_array(f, "tokenizer.ggml.scores", GgufType::F32, "floats");
        if (sc.floats.size() != n) {
            fail("{}: tokenizer.ggml.scores has {} entries for {} tokens", f.path(),
                 sc.floats.size(), n);
        }
        const std::vector<float> scores(sc.floats.begin(), sc.floats.end());
        const bool prefix = f.get_int_opt("tokenizer.ggml.add_space_prefix").value_or(1) != 0;
        t.prepend = prefix ? Prepend::Always : Prepend::Never;
        t.finalize();
        t.build_score_merges(scores);
        t.add_bos = f.get_int_opt("tokenizer.ggml.add_bos_token").value_or(1) != 0;
    } else {
        fail("{}: tokenizer.ggml.model = '{}' is not supported (gpt2, llama)", f.path(), *model);
    }

    t.bos = token_id_opt(f, "tokenizer.ggml.bos_token_id", n);
    t.eos = token_id_opt(f, "tokenizer.ggml.eos_token_id", n);
    t.unk = token_id_opt(f, "tokenizer.ggml.unknown_token_id", n);
    if (t.unk < 0) {
        for (size_t i = 0; i < n && t.unk < 0; ++i) {
            if (t.attr[i] == Attr::Unknown) t.unk = int32_t(i);
        }
    }
    for (const char* key : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
        const int32_t id = token_id_opt(f, key, n);
        if (id >= 0) t.eog.insert(id);
    }
    t.add_eog_by_name();
    t.chat_template = f.get_string_opt("tokenizer.chat_template").value_or("");
    return tk;
}

// ---- encode / decode ---------------------------------------------------------------------------

void State::encode_fragment(std::string_view text, bool at_start, std::vector<int32_t>& out) const {
    if (text.empty()) return;
    if (model == Model::ByteLevel) {
        encode_byte_level(text, out);
    } else {
        const bool add_prefix =
            prepend == Prepend::Always || (prepend == Prepend::First && at_start);
        encode_spm(text, add_prefix, out);
    }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos,
                                       bool parse_special) const {
    const Impl& t = *impl_;
    if (const size_t bad = utf8_invalid_at(text); bad != std::string_view::npos) {
        fail("encode: the text is not valid UTF-8 (byte {} of {})", bad, text.size());
    }
    std::vector<int32_t> out;
    out.reserve(text.size() / 3 + 4);
    if (add_bos && t.add_bos && t.bos >= 0) out.push_back(t.bos);

    // Split out added tokens, leftmost-longest: special ones only when parse_special, non-special
    // (user-defined) ones always, like llama.cpp and Hugging Face.
    const size_t n = text.size();
    size_t frag = 0;  // start of the pending raw-text fragment
    size_t i = 0;
    while (i < n) {
        const auto c = static_cast<unsigned char>(text[i]);
        const AddedToken* hit = nullptr;
        for (uint32_t k : t.added_by_byte[c]) {
            const AddedToken& a = t.added[k];
            if (a.special && !parse_special) continue;
            if (text.compare(i, a.text.size(), a.text) == 0) {
                hit = &a;
                break;
            }
        }
        if (!hit) {
            i += utf8_len(c);
            continue;
        }
        auto is_ws = [](char ch) { return ch == ' ' || (ch >= '\t' && ch <= '\r'); };
        size_t s = i, e = i + hit->text.size();
        if (hit->lstrip) {
            while (s > frag && is_ws(text[s - 1])) --s;
        }
        if (hit->rstrip) {
            while (e < n && is_ws(text[e])) ++e;
        }
        t.encode_fragment(text.substr(frag, s - frag), frag == 0, out);
        out.push_back(hit->id);
        frag = i = e;
    }
    t.encode_fragment(text.substr(frag), frag == 0, out);
    return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
    const Impl& t = *impl_;
    std::string out;
    for (int32_t id : ids) {
        if (id < 0 || size_t(id) >= t.pieces.size()) {
            fail("decode: token id {} is outside the vocabulary [0, {})", id, t.pieces.size());
        }
        out += t.pieces[size_t(id)];
    }
    // SentencePiece: drop the space that the "▁" prefix added (Hugging Face's Strip decoder).
    if (t.model == Model::Spm && t.prepend != Prepend::Never && !out.empty() && out[0] == ' ') {
        out.erase(0, 1);
    }
    return out;
}

std::string Tokenizer::token_text(int32_t id) const {
    const Impl& t = *impl_;
    if (id < 0 || size_t(id) >= t.pieces.size()) {
        fail("token_text: token id {} is outside the vocabulary [0, {})", id, t.pieces.size());
    }
    return t.pieces[size_t(id)];
}

int Tokenizer::n_vocab() const {
    return int(impl_->tokens.size());
}
int32_t Tokenizer::bos() const {
    return impl_->bos;
}
int32_t Tokenizer::eos() const {
    return impl_->eos;
}
bool Tokenizer::is_eog(int32_t id) const {
    return impl_->eog.count(id) != 0;
}
std::string Tokenizer::kind() const {
    return impl_->kind;
}

std::string Tokenizer::apply_chat_template(const std::vector<ChatMessage>& messages,
                                           bool add_generation_prompt) const {
    return render_chat_template(*impl_, messages, add_generation_prompt);
}

}  // namespace kvs
