// Test helper: the vocabulary-only GGUF of the tiny SentencePiece fixture
// (tests/fixtures/tokenizer_spm_tiny/), built at test time from its tokenizer.json and
// tokenizer_config.json instead of being kept in git as a binary file.
//
// It holds what llama.cpp's converter writes for a SentencePiece BPE model (and what
// scripts/make_tokenizer_fixture.py wrote with gguf-py, byte for byte): the pieces in id order,
// their scores (SentencePiece's BPE trainer scores a piece by minus its merge rank: 0, -1, -2, ...
// over the normal pieces, 0 for the others), their types (2 unknown, 3 control, 6 byte
// <0xHH>, 1 normal), the bos / eos / unk ids, add_bos_token, add_space_prefix and the chat
// template.
//
//   const std::string path = kvs::test::spm_tiny_gguf_path(KVS_FIXTURES "/tokenizer_spm_tiny");
#pragma once
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "gguf_writer.h"

namespace kvs::test {

inline std::vector<uint8_t> spm_tiny_gguf(const std::string& dir) {
    auto load = [](const std::string& p) {
        std::ifstream f(p);
        if (!f) throw std::runtime_error("spm_tiny_gguf: cannot read " + p);
        std::stringstream s;
        s << f.rdbuf();
        return nlohmann::json::parse(s.str());
    };
    const nlohmann::json tj = load(dir + "/tokenizer.json");
    const nlohmann::json cfg = load(dir + "/tokenizer_config.json");
    const auto& vocab = tj.at("model").at("vocab");
    std::vector<std::string> pieces(vocab.size());
    for (auto it = vocab.begin(); it != vocab.end(); ++it)
        pieces.at(it.value().get<size_t>()) = it.key();
    auto id_of = [&](const std::string& key) { return vocab.at(cfg.at(key).get<std::string>()); };
    const int unk = id_of("unk_token"), bos = id_of("bos_token"), eos = id_of("eos_token");
    std::vector<bool> control(pieces.size(), false);
    for (const auto& a : tj.at("added_tokens"))
        if (a.at("special").get<bool>() && a.at("id").get<int>() != unk)
            control.at(a.at("id").get<size_t>()) = true;
    auto byte_piece = [](const std::string& t) {  // <0xHH>
        auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); };
        return t.size() == 6 && t.compare(0, 3, "<0x") == 0 && hex(t[3]) && hex(t[4]) &&
               t[5] == '>';
    };
    std::vector<float> scores;
    std::vector<int32_t> types;
    int rank = 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
        int32_t t = 1;
        if (int(i) == unk)
            t = 2;
        else if (control[i])
            t = 3;
        else if (byte_piece(pieces[i]))
            t = 6;
        types.push_back(t);
        scores.push_back(t == 1 ? -float(rank++) : 0.0f);
    }
    GgufWriter w;
    w.add_string("general.architecture", "llama");
    w.add_string("tokenizer.ggml.model", "llama");
    w.add_string_array("tokenizer.ggml.tokens", pieces);
    w.add_f32_array("tokenizer.ggml.scores", scores);
    w.add_i32_array("tokenizer.ggml.token_type", types);
    w.add_u32("tokenizer.ggml.bos_token_id", uint32_t(bos));
    w.add_u32("tokenizer.ggml.eos_token_id", uint32_t(eos));
    w.add_u32("tokenizer.ggml.unknown_token_id", uint32_t(unk));
    w.add_bool("tokenizer.ggml.add_bos_token", cfg.at("add_bos_token").get<bool>());
    w.add_bool("tokenizer.ggml.add_space_prefix", true);
    w.add_string("tokenizer.chat_template", cfg.at("chat_template").get<std::string>());
    return w.bytes();
}

// Writes the GGUF once per process into the temp directory and returns its path (removed when
// the process exits).
inline std::string spm_tiny_gguf_path(const std::string& dir) {
    struct File {
        std::string path;
        ~File() {
            std::error_code ec;
            std::filesystem::remove(path, ec);
        }
    };
    static const File file = [&] {
        File f{(std::filesystem::temp_directory_path() /
                ("kvs_spm_tiny_" + std::to_string(getpid()) + ".gguf"))
                   .string()};
        GgufWriter::write_file(f.path, spm_tiny_gguf(dir));
        return f;
    }();
    return file.path;
}

}  // namespace kvs::test
