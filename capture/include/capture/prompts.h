// Retrieval prompts of a requested length in tokens, with the answer hidden at a requested depth.
//  - passkey: an instruction, filler sentences ("The grass is green. The sky is blue. ..."), the
//    sentence "The pass key is NNNNN. Remember it." (a 5-digit number from the seed) among them,
//    then "What is the pass key? The pass key is".
//  - needle: a haystack text (repeated as needed) with "The special magic number for KEY is:
//    NNNNNNN." inserted between two of its sentences, then the question about KEY.
// The needle goes at the sentence boundary closest to `depth` (0 = first, 1 = last) of the filler
// or haystack, measured in tokens, and the answer appears exactly once in the prompt. With chat,
// the text (question included, without the answer cue) is the user message of the model's chat
// template.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "capture/trace_writer.h"
#include "engine/tokenizer.h"

namespace kvs::capture {

struct TaskParams {
    std::string kind = "passkey";  // "passkey" or "needle"
    int ctx = 512;                 // prompt length in tokens (the result is at most this, and
                                   // within one filler sentence of it)
    double depth = 0.5;
    uint64_t seed = 0;
    bool chat = false;
    std::string haystack;  // needle: the text to hide the needle in
};

struct TaskPrompt {
    std::string text;          // the prompt as given to the tokenizer
    std::vector<int32_t> ids;  // encoded (special tokens parsed with chat)
    TaskRecord task;           // kind, answer, needle, depth, seed, answer_positions, needle range
    int filler_begin = 0, filler_end = 0;  // token range of filler / haystack (needle included)
};

// Throws kvs::Error when ctx is too short for the instruction, needle and question, or the
// haystack is empty.
TaskPrompt build_task_prompt(const Tokenizer& tok, const TaskParams& p);

// Whether the generated text contains the answer.
bool answer_found(const std::string& generated, const std::string& answer);

}  // namespace kvs::capture
