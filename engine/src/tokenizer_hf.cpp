// Tokenizer::from_hf_dir: a Hugging Face tokenizer.json (model BPE) plus, when present,
// tokenizer_config.json (bos/eos, add_bos_token, chat_template) and chat_template.jinja.
//
// Supported tokenizer.json parts:
//   model          BPE: vocab, merges ("a b" strings or ["a", "b"] pairs), byte_fallback,
//                  ignore_merges, fuse_unk, unk_token
//   normalizer     null | NFC (taken as identity: text is expected in NFC, as llama.cpp does) |
//                  Prepend("▁") | Replace(" " -> "▁") | Sequence of those
//   pre_tokenizer  null | ByteLevel(add_prefix_space, use_regex) | Split(Regex|String, Isolated |
//                  Removed) | Digits(individual_digits) | Metaspace(replacement "▁",
//                  prepend_scheme, split) | Sequence of those
//   added_tokens   id, content, special, lstrip, rstrip
// Anything else is rejected with a kvs::Error naming the field.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "engine/error.h"
#include "engine/tokenizer.h"
#include "tokenizer_impl.h"

namespace kvs {

using namespace tok;
using nlohmann::json;

namespace {

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("{}: cannot open", path);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

json parse_json(const std::string& path) {
    try {
        return json::parse(read_file(path));
    } catch (const json::exception& e) {
        fail("{}: invalid JSON: {}", path, e.what());
    }
}

// Escapes a literal for use inside a PCRE2 pattern.
std::string regex_quote(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (std::string_view("\\^$.|?*+()[]{}-/").find(c) != std::string_view::npos) out += '\\';
        out += c;
    }
    return out;
}

struct Loader {
    std::string path;  // tokenizer.json
    State& t;

    // What the normalizer / pre-tokenizer asked for.
    bool byte_level = false;
    bool metaspace = false;
    bool replace_space = false;  // Replace(" " -> "▁")
    bool prepend_norm = false;   // Prepend("▁")
    std::string metaspace_scheme = "always";
    std::vector<std::string> steps = {};  // names of the pre-tokenizer steps, for kind()

    [[noreturn]] void bad(const std::string& field, const std::string& why) const {
        fail("{}: {}: {}", path, field, why);
    }

    static std::string type_of(const json& node) {
        auto it = node.find("type");
        return it != node.end() && it->is_string() ? it->get<std::string>() : std::string();
    }

    void normalizer(const json& node, const std::string& field) {
        if (node.is_null()) return;
        if (!node.is_object()) bad(field, "expected an object");
        const std::string type = type_of(node);
        if (type == "Sequence") {
            const auto it = node.find("normalizers");
            if (it == node.end() || !it->is_array()) bad(field, "Sequence without 'normalizers'");
            for (size_t i = 0; i < it->size(); ++i) {
                normalizer((*it)[i], fmt::format("{}.normalizers[{}]", field, i));
            }
        } else if (type == "NFC") {
            // identity, see the file comment
        } else if (type == "Prepend") {
            if (node.value("prepend", std::string()) != "\xE2\x96\x81") {
                bad(field, "Prepend of something other than \"\xE2\x96\x81\"");
            }
            prepend_norm = true;
        } else if (type == "Replace") {
            const auto pat = node.find("pattern");
            const bool ok = pat != node.end() && pat->is_object() &&
                            pat->value("String", std::string()) == " " &&
                            node.value("content", std::string()) == "\xE2\x96\x81";
            if (!ok) bad(field, "only Replace(\" \" -> \"\xE2\x96\x81\") is supported");
            replace_space = true;
        } else {
            bad(field, fmt::format("normalizer type '{}' is not supported", type));
        }
    }

    void pre_tokenizer(const json& node, const std::string& field) {
        if (node.is_null()) return;
        if (!node.is_object()) bad(field, "expected an object");
        const std::string type = type_of(node);
        if (type == "Sequence") {
            const auto it = node.find("pretokenizers");
            if (it == node.end() || !it->is_array()) bad(field, "Sequence without 'pretokenizers'");
            for (size_t i = 0; i < it->size(); ++i) {
                pre_tokenizer((*it)[i], fmt::format("{}.pretokenizers[{}]", field, i));
            }
        } else if (type == "ByteLevel") {
            byte_level = true;
            if (node.value("add_prefix_space", false)) {
                t.pre.add_prefix_space();
                steps.push_back("prefix");
            }
            if (node.value("use_regex", true)) {
                t.pre.add_split(kRegexGpt2);
                steps.push_back("gpt2");
            }
        } else if (type == "Split") {
            const auto pat = node.find("pattern");
            if (pat == node.end() || !pat->is_object()) bad(field, "Split without 'pattern'");
            std::string re;
            if (pat->contains("Regex") && (*pat)["Regex"].is_string()) {
                re = (*pat)["Regex"].get<std::string>();
            } else if (pat->contains("String") && (*pat)["String"].is_string()) {
                re = regex_quote((*pat)["String"].get<std::string>());
            } else {
                bad(field, "pattern is neither Regex nor String");
            }
            if (node.value("invert", false))
                bad(field, "Split with invert = true is not supported");
            const std::string behavior = node.value("behavior", std::string("Isolated"));
            if (behavior != "Isolated" && behavior != "Removed") {
                bad(field, fmt::format("Split behavior '{}' is not supported", behavior));
            }
            t.pre.add_split(re, behavior == "Removed");
            steps.push_back(re == kRegexLlama3 ? "llama3" : re == kRegexQwen2 ? "qwen2" : "split");
        } else if (type == "Digits") {
            const bool single = node.value("individual_digits", false);
            t.pre.add_split(single ? kRegexDigit : kRegexDigits);
            steps.push_back(single ? "digit" : "digits");
        } else if (type == "Metaspace") {
            if (node.value("replacement", std::string("\xE2\x96\x81")) != "\xE2\x96\x81") {
                bad(field, "Metaspace replacement other than \"\xE2\x96\x81\"");
            }
            metaspace = true;
            if (node.contains("prepend_scheme") && node["prepend_scheme"].is_string()) {
                metaspace_scheme = node["prepend_scheme"].get<std::string>();
            } else {
                metaspace_scheme = node.value("add_prefix_space", true) ? "always" : "never";
            }
            t.metaspace_split = node.value("split", true);
        } else {
            bad(field, fmt::format("pre-tokenizer type '{}' is not supported", type));
        }
    }

    std::string kind_name() const {
        auto is = [&](std::initializer_list<const char*> want) {
            return std::equal(steps.begin(), steps.end(), want.begin(), want.end());
        };
        if (is({"gpt2"})) return "gpt2";
        if (is({"digit", "gpt2"})) return "smollm";
        if (is({"llama3"})) return "llama3";
        if (is({"qwen2"})) return "qwen2";
        return "custom";
    }
};

// "bos_token": "<s>" or {"content": "<s>", ...}
std::optional<std::string> token_string(const json& cfg, const char* key) {
    auto it = cfg.find(key);
    if (it == cfg.end() || it->is_null()) return std::nullopt;
    if (it->is_string()) return it->get<std::string>();
    if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
        return (*it)["content"].get<std::string>();
    }
    return std::nullopt;
}

}  // namespace

Tokenizer Tokenizer::from_hf_dir(const std::string& dir) {
    // A field of the wrong JSON type that the checks below read directly (a number where
    // "add_prefix_space" must be a bool, found by the tokenizer_json fuzz target) is one line too.
    try {
        return from_hf_dir_checked(dir);
    } catch (const nlohmann::json::exception& e) {
        fail("{}: unexpected JSON: {}", (std::filesystem::path(dir) / "tokenizer.json").string(),
             e.what());
    }
}

Tokenizer Tokenizer::from_hf_dir_checked(const std::string& dir) {
    namespace fs = std::filesystem;
    Tokenizer tk;
    Impl& t = *tk.impl_;
    const std::string path = (fs::path(dir) / "tokenizer.json").string();
    t.source = path;
    const json j = parse_json(path);
    Loader L{path, t};
    if (!j.is_object()) L.bad("top level", "expected an object");

    // -- model
    const auto mit = j.find("model");
    if (mit == j.end() || !mit->is_object()) L.bad("model", "missing");
    const json& m = *mit;
    const std::string mtype = Loader::type_of(m);
    if (!mtype.empty() && mtype != "BPE") {
        L.bad("model.type", fmt::format("'{}' is not supported (only BPE)", mtype));
    }
    const auto vit = m.find("vocab");
    if (vit == m.end() || !vit->is_object()) L.bad("model.vocab", "missing or not an object");
    const auto merges_it = m.find("merges");
    if (merges_it == m.end() || !merges_it->is_array()) {
        L.bad("model.merges", "missing or not an array");
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
        auto it = m.find(key);
        if (it != m.end() && it->is_string() && !it->get<std::string>().empty()) {
            L.bad(fmt::format("model.{}", key), "is not supported");
        }
    }

    // -- vocabulary (model.vocab + added_tokens)
    constexpr int64_t kMaxVocab = 1 << 24;
    int64_t max_id = -1;
    for (auto it = vit->begin(); it != vit->end(); ++it) {
        if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() >= kMaxVocab) {
            L.bad("model.vocab", fmt::format("token '{}' has a bad id {}", it.key(), it->dump()));
        }
        max_id = std::max(max_id, it->get<int64_t>());
    }
    const json added = j.value("added_tokens", json::array());
    if (!added.is_array()) L.bad("added_tokens", "not an array");
    for (size_t i = 0; i < added.size(); ++i) {
        const json& a = added[i];
        if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
            !a.contains("content") || !a["content"].is_string()) {
            L.bad(fmt::format("added_tokens[{}]", i), "needs an integer 'id' and a 'content'");
        }
        const int64_t id = a["id"].get<int64_t>();
        if (id < 0 || id >= kMaxVocab) L.bad(fmt::format("added_tokens[{}].id", i), "out of range");
        max_id = std::max(max_id, id);
    }
    if (max_id < 0) L.bad("model.vocab", "is empty");
    const size_t n = size_t(max_id + 1);
    t.tokens.assign(n, std::string());
    t.attr.assign(n, Attr::Unused);
    for (auto it = vit->begin(); it != vit->end(); ++it) {
        const auto id = size_t(it->get<int64_t>());
        if (t.attr[id] != Attr::Unused) {
            L.bad("model.vocab",
                  fmt::format("id {} is given to both '{}' and '{}'", id, t.tokens[id], it.key()));
        }
        t.tokens[id] = it.key();
        t.attr[id] = Attr::Normal;
    }
    for (size_t i = 0; i < added.size(); ++i) {
        const json& a = added[i];
        const auto id = size_t(a["id"].get<int64_t>());
        const std::string content = a["content"].get<std::string>();
        if (content.empty()) L.bad(fmt::format("added_tokens[{}].content", i), "is empty");
        if (t.attr[id] == Attr::Normal && t.tokens[id] != content) {
            L.bad(fmt::format("added_tokens[{}]", i),
                  fmt::format("id {} is '{}' in model.vocab but '{}' here", id, t.tokens[id],
                              content));
        }
        const bool special = a.value("special", false);
        t.tokens[id] = content;
        t.attr[id] = special ? Attr::Control : Attr::UserDefined;
        AddedToken at{content, int32_t(id), special};
        at.lstrip = a.value("lstrip", false);
        at.rstrip = a.value("rstrip", false);
        t.added.push_back(at);
    }

    // -- normalizer / pre-tokenizer decide the flavour
    L.normalizer(j.value("normalizer", json()), "normalizer");
    L.pre_tokenizer(j.value("pre_tokenizer", json()), "pre_tokenizer");
    t.byte_fallback = m.value("byte_fallback", false);
    t.ignore_merges = m.value("ignore_merges", false);
    t.fuse_unk = m.value("fuse_unk", false);
    if (L.byte_level) {
        if (L.metaspace || L.replace_space || L.prepend_norm) {
            L.bad("pre_tokenizer", "mixes ByteLevel with Metaspace / \"\xE2\x96\x81\" handling");
        }
        t.model = Model::ByteLevel;
        t.kind = "bpe/" + L.kind_name();
    } else if (L.metaspace || L.replace_space) {
        if (!t.pre.empty()) L.bad("pre_tokenizer", "splits are not supported with Metaspace");
        t.model = Model::Spm;
        t.kind = "spm";
        t.metaspace = L.metaspace;
        if (L.metaspace) {
            if (L.metaspace_scheme == "always") {
                t.prepend = Prepend::Always;
            } else if (L.metaspace_scheme == "first") {
                t.prepend = Prepend::First;
            } else if (L.metaspace_scheme == "never") {
                t.prepend = Prepend::Never;
            } else {
                L.bad("pre_tokenizer",
                      fmt::format("unknown prepend_scheme '{}'", L.metaspace_scheme));
            }
        } else {
            t.prepend = L.prepend_norm ? Prepend::Always : Prepend::Never;
            t.metaspace_split = false;
        }
    } else {
        L.bad("pre_tokenizer",
              "neither ByteLevel nor Metaspace / \"\xE2\x96\x81\" BPE: unsupported");
    }
    t.finalize();

    if (auto u = m.find("unk_token"); u != m.end() && u->is_string()) {
        auto it = t.token_to_id.find(u->get<std::string>());
        if (it == t.token_to_id.end()) L.bad("model.unk_token", "not in the vocabulary");
        t.unk = it->second;
    }

    // -- merges (rank = position)
    const json& merges = *merges_it;
    for (size_t i = 0; i < merges.size(); ++i) {
        const json& e = merges[i];
        std::string l, r;
        if (e.is_string()) {
            const std::string s = e.get<std::string>();
            const size_t sp = s.find(' ');
            if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
                L.bad(fmt::format("model.merges[{}]", i),
                      fmt::format("'{}' is not 'left right'", s));
            }
            l = s.substr(0, sp);
            r = s.substr(sp + 1);
        } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
            l = e[0].get<std::string>();
            r = e[1].get<std::string>();
        } else {
            L.bad(fmt::format("model.merges[{}]", i), "neither \"a b\" nor [\"a\", \"b\"]");
        }
        auto a = t.token_to_id.find(l);
        auto b = t.token_to_id.find(r);
        auto c = t.token_to_id.find(l + r);
        if (a == t.token_to_id.end() || b == t.token_to_id.end() || c == t.token_to_id.end()) {
            L.bad(fmt::format("model.merges[{}]", i),
                  fmt::format("'{} {}' uses a token missing from the vocabulary", l, r));
        }
        t.merges.add(a->second, b->second, {double(i), c->second});
    }

    // -- bos / eos / add_bos: tokenizer_config.json, else the post-processor template
    auto lookup = [&](const std::string& file, const char* key, const std::string& text) {
        auto it = t.token_to_id.find(text);
        if (it == t.token_to_id.end()) {
            fail("{}: {} '{}' is not in the vocabulary", file, key, text);
        }
        return it->second;
    };
    bool have_add_bos = false;
    const std::string cfg_path = (fs::path(dir) / "tokenizer_config.json").string();
    if (fs::exists(cfg_path)) {
        const json cfg = parse_json(cfg_path);
        if (!cfg.is_object()) fail("{}: expected an object", cfg_path);
        if (auto s = token_string(cfg, "bos_token")) t.bos = lookup(cfg_path, "bos_token", *s);
        if (auto s = token_string(cfg, "eos_token")) t.eos = lookup(cfg_path, "eos_token", *s);
        if (auto it = cfg.find("add_bos_token"); it != cfg.end() && it->is_boolean()) {
            t.add_bos = it->get<bool>();
            have_add_bos = true;
        }
        if (auto it = cfg.find("chat_template"); it != cfg.end()) {
            if (it->is_string()) {
                t.chat_template = it->get<std::string>();
            } else if (it->is_array()) {  // [{"name": "default", "template": "..."}, ...]
                for (const json& e : *it) {
                    if (e.is_object() && e.value("name", std::string()) == "default" &&
                        e.contains("template") && e["template"].is_string()) {
                        t.chat_template = e["template"].get<std::string>();
                    }
                }
            }
        }
    }
    const std::string jinja = (fs::path(dir) / "chat_template.jinja").string();
    if (t.chat_template.empty() && fs::exists(jinja)) t.chat_template = read_file(jinja);

    // TemplateProcessing whose "single" starts with a special token: that token is a BOS added
    // by default.
    const json pp = j.value("post_processor", json());
    if (pp.is_object() && Loader::type_of(pp) == "TemplateProcessing" && pp.contains("single") &&
        pp["single"].is_array() && !pp["single"].empty()) {
        const json& first = pp["single"][0];
        if (first.is_object() && first.contains("SpecialToken")) {
            const std::string id = first["SpecialToken"].value("id", std::string());
            auto it = t.token_to_id.find(id);
            if (it != t.token_to_id.end()) {
                if (t.bos < 0) t.bos = it->second;
                if (!have_add_bos) t.add_bos = it->second == t.bos;
            }
        }
    }
    t.add_eog_by_name();
    return tk;
}

}  // namespace kvs
