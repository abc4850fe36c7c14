#include "capture/prompts.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "engine/error.h"

namespace kvs::capture {

namespace {

// The filler of the passkey literature (Mohtashami & Jaggi 2023, "Landmark Attention").
const std::vector<std::string> kPasskeyFiller = {"The grass is green.", "The sky is blue.",
                                                 "The sun is yellow.", "Here we go.",
                                                 "There and back again."};
const char* kPasskeyIntro =
    "There is an important piece of information hidden inside a lot of irrelevant text. Find it "
    "and memorize it. I will quiz you about the important information there.\n\n";
const char* kNeedleIntro =
    "A special magic number is hidden in the text below. Remember it: you will be asked for it "
    "at the end.\n\n";
const std::vector<std::string> kKeys = {
    "apple",  "river",  "lantern", "violet", "harbor", "meadow", "copper", "falcon",
    "orchid", "summit", "glacier", "canyon", "ember",  "willow", "marble", "thistle"};

bool is_space(char c) {
    return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

// Sentences of a text, each with the whitespace that follows it.
std::vector<std::string> split_sentences(const std::string& s) {
    std::vector<std::string> out;
    size_t b = 0;
    for (size_t i = 0; i < s.size(); ++i) {
        const bool end =
            (s[i] == '.' || s[i] == '!' || s[i] == '?') && i + 1 < s.size() && is_space(s[i + 1]);
        if (!end) continue;
        size_t e = i + 1;
        while (e < s.size() && is_space(s[e])) ++e;
        out.push_back(s.substr(b, e - b));
        b = e;
        i = e - 1;
    }
    if (b < s.size()) out.push_back(s.substr(b));
    return out;
}

struct Parts {
    std::string intro, needle, question;
    std::vector<std::string> units;  // cycled
};

struct Composed {
    std::string body;
    std::vector<size_t> unit_start;  // byte offset of each filler unit, and of the question
    size_t needle_b = 0, needle_e = 0;
};

// intro, n filler units with the needle before unit k (k == n: after the last; k < 0: none),
// then the question. Units are separated by a space unless one already ends in whitespace.
Composed compose(const Parts& p, int n, int k) {
    Composed c;
    c.body = p.intro;
    auto add = [&](const std::string& u) {
        if (c.body.size() > p.intro.size() && !is_space(c.body.back())) c.body += ' ';
        const size_t at = c.body.size();
        c.body += u;
        return at;
    };
    for (int i = 0; i <= n; ++i) {
        if (i == k) {
            c.needle_b = add(p.needle);
            c.needle_e = c.body.size();
        }
        if (i < n) c.unit_start.push_back(add(p.units[size_t(i) % p.units.size()]));
    }
    c.unit_start.push_back(c.body.size());
    c.body += p.question;
    return c;
}

struct Encoded {
    std::string text;
    std::vector<int32_t> ids;
    std::vector<size_t> tok_start;  // byte offset of each token in `text` (clamped at 0)
    size_t body_at = 0;             // where the body starts in `text`
};

Encoded encode(const Tokenizer& tok, const std::string& body, bool chat) {
    Encoded e;
    e.text = chat ? tok.apply_chat_template({{"user", body}}, true) : body;
    e.body_at = chat ? e.text.find(body) : 0;
    if (e.body_at == std::string::npos)
        fail("the chat template does not contain the prompt verbatim");
    e.ids = tok.encode(e.text, false, chat);
    std::string joined;
    std::vector<size_t> start;
    for (int32_t id : e.ids) {
        start.push_back(joined.size());
        joined += tok.token_text(id);
    }
    // A SentencePiece vocabulary adds a leading space; decoded text equals the prompt after it.
    if (joined.size() < e.text.size() ||
        joined.compare(joined.size() - e.text.size(), e.text.size(), e.text) != 0)
        fail("the tokenizer does not reproduce the prompt text; cannot locate the needle");
    const size_t shift = joined.size() - e.text.size();
    for (size_t s : start) e.tok_start.push_back(s >= shift ? s - shift : 0);
    return e;
}

// Index of the token that holds byte b of the text (the last token starting at or before b).
int token_at(const Encoded& e, size_t b) {
    const auto it = std::upper_bound(e.tok_start.begin(), e.tok_start.end(), b);
    return int(it - e.tok_start.begin()) - 1;
}

int count_of(const std::string& s, const std::string& what) {
    int n = 0;
    for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
    return n;
}

}  // namespace

bool answer_found(const std::string& generated, const std::string& answer) {
    return !answer.empty() && generated.find(answer) != std::string::npos;
}

TaskPrompt build_task_prompt(const Tokenizer& tok, const TaskParams& tp) {
    if (tp.kind != "passkey" && tp.kind != "needle")
        fail("unknown task '{}': expected passkey or needle", tp.kind);
    if (!(tp.depth >= 0 && tp.depth <= 1)) fail("--depth {} is outside [0, 1]", tp.depth);
    std::mt19937_64 rng(tp.seed);
    Parts p;
    TaskRecord task;
    task.kind = tp.kind;
    task.depth = tp.depth;
    task.seed = int64_t(tp.seed);
    if (tp.kind == "passkey") {
        task.answer = std::to_string(10000 + rng() % 90000);
        p.intro = kPasskeyIntro;
        p.units = kPasskeyFiller;
        p.needle = fmt::format("The pass key is {}. Remember it.", task.answer);
        p.question =
            tp.chat ? "\n\nWhat is the pass key?" : "\n\nWhat is the pass key? The pass key is";
    } else {
        p.units = split_sentences(tp.haystack);
        if (p.units.empty()) fail("the haystack text is empty");
        task.needle_key = kKeys[rng() % kKeys.size()];
        for (int tries = 0;; ++tries) {
            task.answer = std::to_string(1000000 + rng() % 9000000);
            if (tp.haystack.find(task.answer) == std::string::npos) break;
            if (tries > 100) fail("cannot find a magic number absent from the haystack");
        }
        p.intro = kNeedleIntro;
        p.needle =
            fmt::format("The special magic number for {} is: {}.", task.needle_key, task.answer);
        const std::string q =
            fmt::format("\n\nWhat is the special magic number for {} mentioned in the text above?",
                        task.needle_key);
        p.question =
            tp.chat ? q : q + fmt::format(" The special magic number for {} is:", task.needle_key);
    }
    task.needle = p.needle;

    auto proportional = [&](int n) { return int(std::lround(tp.depth * n)); };
    auto length = [&](int n) {
        return int(encode(tok, compose(p, n, proportional(n)).body, tp.chat).ids.size());
    };
    if (length(0) > tp.ctx)
        fail("--ctx {} is too short for a {} prompt: it needs at least {} tokens", tp.ctx, tp.kind,
             length(0));
    // The most filler units that fit (every unit is at least one token).
    int lo = 0, hi = tp.ctx;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (length(mid) <= tp.ctx)
            lo = mid;
        else
            hi = mid - 1;
    }
    for (int n = lo; n >= 0; --n) {
        // Place the needle at the unit boundary closest to depth, in tokens of the filler.
        const Composed plain = compose(p, n, -1);
        const Encoded ep = encode(tok, plain.body, tp.chat);
        std::vector<int> tb;
        for (size_t s : plain.unit_start) tb.push_back(token_at(ep, ep.body_at + s));
        const double target = tb.front() + tp.depth * (tb.back() - tb.front());
        int k = 0;
        for (int i = 1; i <= n; ++i)
            if (std::fabs(tb[size_t(i)] - target) < std::fabs(tb[size_t(k)] - target)) k = i;
        const Composed c = compose(p, n, k);
        Encoded e = encode(tok, c.body, tp.chat);
        if (int(e.ids.size()) > tp.ctx) continue;  // the needle changed the split: one unit less
        if (count_of(e.text, task.answer) != 1)
            fail("internal: the answer appears {} times in the prompt",
                 count_of(e.text, task.answer));
        TaskPrompt out;
        const size_t ab = e.body_at + c.body.find(task.answer, c.needle_b);
        for (int i = 0; i < int(e.ids.size()); ++i) {
            const size_t s = e.tok_start[size_t(i)];
            const size_t t_end =
                i + 1 < int(e.ids.size()) ? e.tok_start[size_t(i) + 1] : e.text.size();
            if (s < ab + task.answer.size() && t_end > ab) task.answer_positions.push_back(i);
        }
        task.needle_begin = token_at(e, e.body_at + c.needle_b);
        task.needle_end = token_at(e, e.body_at + c.needle_e - 1) + 1;
        out.filler_begin = token_at(e, e.body_at + std::min(c.needle_b, c.unit_start.front()));
        out.filler_end = token_at(e, e.body_at + c.unit_start.back());
        out.text = std::move(e.text);
        out.ids = std::move(e.ids);
        out.task = std::move(task);
        return out;
    }
    fail("--ctx {} is too short for a {} prompt", tp.ctx, tp.kind);
}

}  // namespace kvs::capture
