// fuzz_chat_template: a chat template (the Jinja source a model file carries) and a chat.
// Input: the template, then NUL-separated role / content pairs. The template is recognised or
// refused (kvs::Error); a recognised one renders the chat or refuses it (roles, order).
#include <string>
#include <vector>

#include "../engine/src/tokenizer_impl.h"
#include "fuzz_entries.h"

void kvs::fuzz::chat_template(const uint8_t* data, size_t size) {
    std::vector<std::string> parts(1);
    for (size_t i = 0; i < size; ++i) {
        if (data[i] == 0)
            parts.emplace_back();
        else
            parts.back() += char(data[i]);
    }
    tok::State t;
    t.source = "fuzz";
    t.tokens = {"<s>", "</s>"};
    t.bos = 0;
    t.eos = 1;
    t.chat_template = parts[0];
    std::vector<ChatMessage> msgs;
    for (size_t i = 1; i + 1 < parts.size(); i += 2) msgs.push_back({parts[i], parts[i + 1]});
    for (bool gen : {false, true}) attempt([&] { (void)tok::render_chat_template(t, msgs, gen); });
}
