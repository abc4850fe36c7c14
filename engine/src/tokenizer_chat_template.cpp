// Chat templates, recognised by distinctive markers in the model's Jinja template and rendered
// here (no Jinja engine). Each renderer reproduces what Hugging Face's apply_chat_template(...,
// tokenize=False) prints for the reference template named beside it (Jinja with trim_blocks and
// lstrip_blocks):
//   Llama 3   <|start_header_id|>  Meta-Llama-3-8B-Instruct (bos, header, content|trim, eot)
//   ChatML    <|im_start|>         SmolLM2 / Qwen2: a default system prompt is inserted when the
//                                  template carries one as a literal and the first message is not
//                                  a system message
//   Llama 2   [INST] + <<SYS>>     Llama-2-chat (system folded into the first user turn, strip)
//   Mistral   [INST] alone         Mistral-7B-Instruct-v0.1 (no system role)
//   Zephyr    <|user|>             zephyr-7b-beta / TinyLlama-Chat (one "\n" after each turn)
// Unknown templates, Llama 3.1-style ones (date / tools header) and a model without a template
// raise kvs::Error.
#include <algorithm>
#include <optional>

#include "engine/error.h"
#include "tokenizer_impl.h"

namespace kvs {

namespace {

// Python's str.strip() / Jinja's trim: Unicode whitespace at both ends.
bool py_space_at(std::string_view s, size_t i, size_t& len) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1C && c <= 0x1F)) {
        len = 1;
        return true;
    }
    if (c < 0x80) return false;
    len = tok::utf8_len(c);
    if (i + len > s.size() || len == 1) return false;
    uint32_t cp = c & (0x7F >> len);
    for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

std::string py_strip(std::string_view s) {
    size_t b = 0, len = 0;
    while (b < s.size() && py_space_at(s, b, len)) b += len;
    // Scan forward, remembering where the last non-space character ends.
    size_t e = b, i = b;
    while (i < s.size()) {
        if (py_space_at(s, i, len)) {
            i += len;
        } else {
            i += std::max<size_t>(
                1, std::min(tok::utf8_len(static_cast<unsigned char>(s[i])), s.size() - i));
            e = i;
        }
    }
    return std::string(s.substr(b, e - b));
}

// Undoes the escapes of a Jinja string literal.
std::string jinja_unescape(std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 1 < s.size()) {
            const char c = s[++i];
            out += c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c;
        } else {
            out += s[i];
        }
    }
    return out;
}

// A ChatML template's built-in system prompt: the first literal
// '<|im_start|>system\n...<|im_end|>' whose body is plain text (no quote or Jinja syntax).
std::optional<std::string> chatml_default_system(const std::string& tmpl) {
    for (std::string_view mark : {"<|im_start|>system\n", "<|im_start|>system\\n"}) {
        for (size_t pos = tmpl.find(mark); pos != std::string::npos;
             pos = tmpl.find(mark, pos + 1)) {
            const size_t start = pos + mark.size();
            const size_t end = tmpl.find("<|im_end|>", start);
            if (end == std::string::npos) break;
            const std::string_view body = std::string_view(tmpl).substr(start, end - start);
            if (!body.empty() && body.find_first_of("'\"{}+") == std::string_view::npos) {
                return jinja_unescape(body);
            }
        }
    }
    return std::nullopt;
}

enum class Style { ChatML, Llama3, Llama2, Mistral, Zephyr };

Style detect(const std::string& tmpl) {
    auto has = [&](std::string_view s) { return tmpl.find(s) != std::string::npos; };
    if (has("<|start_header_id|>")) {
        if (has("Cutting Knowledge Date") || has("tools")) {
            fail("chat template: Llama 3.1-style template (date / tools header) is not supported");
        }
        return Style::Llama3;
    }
    if (has("<|im_start|>")) return Style::ChatML;
    if (has("[INST]")) return has("<<SYS>>") ? Style::Llama2 : Style::Mistral;
    if (has("<|user|>")) return Style::Zephyr;
    fail(
        "chat template: not recognised (known: ChatML <|im_start|>, Llama 3 "
        "<|start_header_id|>, Llama 2 / Mistral [INST], Zephyr <|user|>)");
}

void check_alternating(const std::vector<ChatMessage>& msgs, size_t first) {
    for (size_t i = first; i < msgs.size(); ++i) {
        const bool want_user = (i - first) % 2 == 0;
        if ((msgs[i].role == "user") != want_user || (!want_user && msgs[i].role != "assistant")) {
            fail(
                "chat template: message {} has role '{}'; roles must alternate "
                "user/assistant/user/...",
                i, msgs[i].role);
        }
    }
}

}  // namespace

std::string tok::render_chat_template(const tok::State& t, const std::vector<ChatMessage>& msgs,
                                      bool add_generation_prompt) {
    if (t.chat_template.empty()) fail("{}: the model has no chat template", t.source);
    const Style style = detect(t.chat_template);
    const std::string bos = t.bos >= 0 ? t.tokens[size_t(t.bos)] : std::string();
    const std::string eos = t.eos >= 0 ? t.tokens[size_t(t.eos)] : std::string();
    std::string out;
    switch (style) {
        case Style::ChatML: {
            const auto sys = chatml_default_system(t.chat_template);
            for (size_t i = 0; i < msgs.size(); ++i) {
                if (i == 0 && msgs[0].role != "system" && sys) {
                    out += "<|im_start|>system\n" + *sys + "<|im_end|>\n";
                }
                out += "<|im_start|>" + msgs[i].role + "\n" + msgs[i].content + "<|im_end|>\n";
            }
            if (add_generation_prompt) out += "<|im_start|>assistant\n";
            break;
        }
        case Style::Llama3: {
            for (size_t i = 0; i < msgs.size(); ++i) {
                if (i == 0) out += bos;
                out += "<|start_header_id|>" + msgs[i].role + "<|end_header_id|>\n\n" +
                       py_strip(msgs[i].content) + "<|eot_id|>";
            }
            if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
            break;
        }
        case Style::Llama2: {
            const bool has_sys = !msgs.empty() && msgs[0].role == "system";
            const size_t first = has_sys ? 1 : 0;
            check_alternating(msgs, first);
            for (size_t i = first; i < msgs.size(); ++i) {
                std::string content = msgs[i].content;
                if (i == first && has_sys) {
                    content = "<<SYS>>\n" + msgs[0].content + "\n<</SYS>>\n\n" + content;
                }
                if (msgs[i].role == "user") {
                    out += bos + "[INST] " + py_strip(content) + " [/INST]";
                } else {
                    out += " " + py_strip(content) + " " + eos;
                }
            }
            break;
        }
        case Style::Mistral: {
            if (!msgs.empty() && msgs[0].role == "system") {
                fail("chat template: this [INST] template has no system role");
            }
            check_alternating(msgs, 0);
            out += bos;
            for (const ChatMessage& m : msgs) {
                out += m.role == "user" ? "[INST] " + m.content + " [/INST]" : m.content + eos;
            }
            break;
        }
        case Style::Zephyr: {
            for (size_t i = 0; i < msgs.size(); ++i) {
                const std::string& r = msgs[i].role;
                if (r == "user" || r == "system" || r == "assistant") {
                    out += "<|" + r + "|>\n" + msgs[i].content + eos + "\n";
                }
                if (i + 1 == msgs.size() && add_generation_prompt) out += "<|assistant|>\n";
            }
            break;
        }
    }
    return out;
}

}  // namespace kvs
