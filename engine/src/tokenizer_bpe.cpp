// UTF-8 helpers, GPT-2's byte-level alphabet, the PCRE2 pre-tokenizer, the BPE merge loop and
// byte-level encoding of one text fragment. See tokenizer_impl.h for the layout.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <unordered_map>

#include "engine/error.h"
#include "tokenizer_impl.h"

namespace kvs::tok {

// ---- UTF-8 -------------------------------------------------------------------------------------

size_t utf8_invalid_at(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const size_t n = s.size();
    size_t i = 0;
    while (i < n) {
        const unsigned char c = p[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        size_t len;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) {
            len = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return i;
        }
        if (i + len > n) return i;
        for (size_t k = 1; k < len; ++k) {
            if ((p[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += len;
    }
    return std::string_view::npos;
}

void utf8_append(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += char(cp);
    } else if (cp < 0x800) {
        out += char(0xC0 | (cp >> 6));
        out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += char(0xE0 | (cp >> 12));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    } else {
        out += char(0xF0 | (cp >> 18));
        out += char(0x80 | ((cp >> 12) & 0x3F));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    }
}

// Decodes one code point at s[i] (s valid UTF-8 or not: invalid bytes decode as themselves).
static uint32_t utf8_next(std::string_view s, size_t& i) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t len = utf8_len(c);
    if (len == 1 || i + len > s.size()) {
        ++i;
        return c;
    }
    uint32_t cp = c & (0x7F >> len);
    for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    i += len;
    return cp;
}

// ---- GPT-2 byte <-> unicode --------------------------------------------------------------------

// Printable Latin-1 bytes stand for themselves; the other 68 bytes are given the code points
// 256, 257, ... in byte order (GPT-2's bytes_to_unicode()).
const std::array<uint32_t, 256>& byte_to_cp() {
    static const std::array<uint32_t, 256> table = [] {
        std::array<uint32_t, 256> t{};
        uint32_t next = 256;
        for (uint32_t b = 0; b < 256; ++b) {
            const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
            t[b] = printable ? b : next++;
        }
        return t;
    }();
    return table;
}

int cp_to_byte(uint32_t cp) {
    static const std::unordered_map<uint32_t, int> rev = [] {
        std::unordered_map<uint32_t, int> m;
        for (int b = 0; b < 256; ++b) m.emplace(byte_to_cp()[b], b);
        return m;
    }();
    auto it = rev.find(cp);
    return it == rev.end() ? -1 : it->second;
}

std::string byte_level_decode(std::string_view token) {
    std::string out;
    out.reserve(token.size());
    size_t i = 0;
    while (i < token.size()) {
        const size_t start = i;
        const uint32_t cp = utf8_next(token, i);
        const int b = cp_to_byte(cp);
        if (b >= 0) {
            out += char(b);
        } else {
            out.append(token.substr(start, i - start));
        }
    }
    return out;
}

std::string byte_level_encode(std::string_view raw) {
    std::string out;
    out.reserve(raw.size() * 2);
    for (unsigned char b : raw) utf8_append(out, byte_to_cp()[b]);
    return out;
}

// ---- pre-tokenizer -----------------------------------------------------------------------------

// GPT-2's pattern as Hugging Face's ByteLevel pre-tokenizer writes it: the trailing \s+ catches a
// lone whitespace before a non-space (which the original pattern left unmatched).
const char* const kRegexGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kRegexLlama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kRegexQwen2 = R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N})"
                                R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kRegexDigit = R"(\p{N})";
const char* const kRegexDigits = R"(\p{N}+)";

struct Regex {
    pcre2_code* code = nullptr;
    std::string pattern;

    explicit Regex(const std::string& p) : pattern(p) {
        int err = 0;
        PCRE2_SIZE err_off = 0;
        code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p.data()), p.size(),
                             PCRE2_UTF | PCRE2_UCP, &err, &err_off, nullptr);
        if (!code) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(err, msg, sizeof msg);
            fail("pre-tokenizer regex /{}/: {} at offset {}", p, reinterpret_cast<char*>(msg),
                 size_t(err_off));
        }
        // JIT is an optimization only; the interpreter gives the same matches.
        (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    }
    ~Regex() { pcre2_code_free(code); }
    Regex(const Regex&) = delete;
    Regex& operator=(const Regex&) = delete;
};

void PreTokenizer::add_split(const std::string& pattern, bool remove_matches) {
    steps_.push_back({std::make_shared<const Regex>(pattern), remove_matches});
}

void PreTokenizer::add_prefix_space() {
    steps_.push_back({nullptr, false});
}

namespace {

struct MatchData {
    pcre2_match_data* md;
    explicit MatchData(const Regex& re)
        : md(pcre2_match_data_create_from_pattern(re.code, nullptr)) {
        if (!md) fail("pre-tokenizer: out of memory");
    }
    ~MatchData() { pcre2_match_data_free(md); }
    MatchData(const MatchData&) = delete;
    MatchData& operator=(const MatchData&) = delete;
};

// Splits piece at the matches of re: every match and every gap between matches becomes a piece
// (gaps only, when remove_matches). The regex sees only this piece, like Hugging Face's Split.
void split_piece(const Regex& re, pcre2_match_data* md, std::string_view piece, bool remove_matches,
                 std::vector<std::string_view>& out) {
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
    const size_t n = piece.size();
    size_t prev = 0;  // end of the last match
    size_t off = 0;
    while (off < n) {
        const int rc = pcre2_match(re.code, subject, n, off, PCRE2_NO_UTF_CHECK, md, nullptr);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            fail("pre-tokenizer regex /{}/ failed: {}", re.pattern, reinterpret_cast<char*>(msg));
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        const size_t s = ov[0], e = ov[1];
        if (e <= s) {  // empty match: none of our patterns produce one, but never loop on it
            off = s + utf8_len(static_cast<unsigned char>(piece[s]));
            continue;
        }
        if (s > prev) out.push_back(piece.substr(prev, s - prev));
        if (!remove_matches) out.push_back(piece.substr(s, e - s));
        prev = off = e;
    }
    if (prev < n) out.push_back(piece.substr(prev));
}

}  // namespace

void PreTokenizer::run(std::string_view text, std::vector<std::string_view>& out,
                       std::deque<std::string>& arena) const {
    out.clear();
    if (text.empty()) return;
    out.push_back(text);
    std::vector<std::string_view> next;
    for (const Step& step : steps_) {
        next.clear();
        next.reserve(out.size() * 2);
        if (!step.re) {
            for (std::string_view p : out) {
                if (!p.empty() && p[0] == ' ') {
                    next.push_back(p);
                } else {
                    arena.push_back(" " + std::string(p));
                    next.push_back(arena.back());
                }
            }
        } else {
            MatchData md(*step.re);
            for (std::string_view p : out)
                split_piece(*step.re, md.md, p, step.remove_matches, next);
        }
        out.swap(next);
    }
}

// ---- BPE ---------------------------------------------------------------------------------------

namespace {
struct Candidate {
    double priority;
    uint32_t left, right;  // symbol indexes
    int32_t left_id, right_id, new_id;
};
// std heap: "a comes after b" -> a is worse: higher priority value, or same and further right.
struct Worse {
    bool operator()(const Candidate& a, const Candidate& b) const {
        return a.priority > b.priority || (a.priority == b.priority && a.left > b.left);
    }
};
}  // namespace

void bpe_merge(std::vector<Symbol>& syms, const PairMap& merges) {
    const size_t n = syms.size();
    if (n < 2) return;
    thread_local std::vector<int32_t> prev, next;
    thread_local std::vector<Candidate> heap;
    prev.resize(n);
    next.resize(n);
    heap.clear();
    for (size_t i = 0; i < n; ++i) {
        prev[i] = int32_t(i) - 1;
        next[i] = i + 1 < n ? int32_t(i + 1) : -1;
    }
    auto try_add = [&](int32_t l, int32_t r) {
        if (l < 0 || r < 0) return;
        const int32_t a = syms[l].id, b = syms[r].id;
        if (a < 0 || b < 0) return;
        const Merge* m = merges.find(a, b);
        if (!m) return;
        heap.push_back({m->priority, uint32_t(l), uint32_t(r), a, b, m->id});
        std::push_heap(heap.begin(), heap.end(), Worse{});
    };
    for (size_t i = 0; i + 1 < n; ++i) try_add(int32_t(i), int32_t(i + 1));

    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), Worse{});
        const Candidate c = heap.back();
        heap.pop_back();
        Symbol& l = syms[c.left];
        Symbol& r = syms[c.right];
        // Stale: either side was merged away or changed since this pair was queued.
        if (l.len == 0 || r.len == 0 || next[c.left] != int32_t(c.right) || l.id != c.left_id ||
            r.id != c.right_id) {
            continue;
        }
        l.id = c.new_id;
        l.len += r.len;
        r.len = 0;
        next[c.left] = next[c.right];
        if (next[c.right] >= 0) prev[next[c.right]] = int32_t(c.left);
        try_add(prev[c.left], int32_t(c.left));
        try_add(int32_t(c.left), next[c.left]);
    }
    size_t w = 0;
    for (size_t i = 0; i < n; ++i) {
        if (syms[i].len != 0) syms[w++] = syms[i];
    }
    syms.resize(w);
}

}  // namespace kvs::tok

namespace kvs {

using namespace tok;

void State::encode_byte_level(std::string_view text, std::vector<int32_t>& out) const {
    std::deque<std::string> arena;
    std::vector<std::string_view> words;
    if (pre.empty()) {
        words.assign(1, text);
    } else {
        pre.run(text, words, arena);
    }
    // Words repeat a lot in real text: cache each word's ids for the length of this call.
    std::unordered_map<std::string_view, std::pair<uint32_t, uint32_t>> cache;
    std::vector<int32_t> cached_ids;
    std::vector<Symbol> syms;
    for (std::string_view w : words) {
        if (w.empty()) continue;
        if (auto it = cache.find(w); it != cache.end()) {
            out.insert(out.end(), cached_ids.begin() + it->second.first,
                       cached_ids.begin() + it->second.first + it->second.second);
            continue;
        }
        const size_t before = out.size();
        bool done = false;
        if (ignore_merges) {
            auto it = token_to_id.find(byte_level_encode(w));
            if (it != token_to_id.end()) {
                out.push_back(it->second);
                done = true;
            }
        }
        if (!done) {
            syms.clear();
            for (size_t i = 0; i < w.size(); ++i) {
                syms.push_back({byte_symbol[static_cast<unsigned char>(w[i])], uint32_t(i), 1});
            }
            bpe_merge(syms, merges);
            // A byte without a token is dropped, as Hugging Face (no unk_token in byte-level
            // BPE) and llama.cpp do. SmolLM2 lacks e.g. 0xF1 and 0xF2.
            for (const Symbol& s : syms) {
                if (s.id >= 0) out.push_back(s.id);
            }
        }
        const auto start = uint32_t(cached_ids.size());
        cached_ids.insert(cached_ids.end(), out.begin() + before, out.end());
        cache.emplace(w, std::make_pair(start, uint32_t(out.size() - before)));
    }
}

}  // namespace kvs
