#!/usr/bin/env python3
"""Writes the tokenizer goldens that tests/engine/test_tokenizer.cpp checks kvs::Tokenizer against.

Needs transformers, tokenizers, gguf and sentencepiece (not needed by the C++ tests, which only
read the committed files). Run from anywhere:

    python3 scripts/make_tokenizer_fixture.py

Writes, under tests/fixtures/:

  tokenizer_smollm2.json      strings, expected ids (parse_special off and on), chat template
                              renderings + ids, token texts, pre-tokenizer splits, and notes on
                              where the two reference paths disagree
  tokenizer_smollm2/          tokenizer.json (SmolLM2's real pre-tokenizer, minified, merges as
                              "a b") + tokenizer_config.json, for Tokenizer::from_hf_dir
  tokenizer_spm_tiny/         a tiny SentencePiece BPE vocabulary (trained here with
                              sentencepiece, byte_fallback): tokenizer.json (Llama-2 layout),
                              tokenizer_config.json and expected.json (the GGUF of this
                              vocabulary is built at test time: tests/engine/spm_tiny_gguf.h)

SmolLM2 reference paths:
  A  transformers' GGUF conversion: AutoTokenizer.from_pretrained(models/, gguf_file=...)
  B  tokenizers.Tokenizer built from A's tokenizer.json with the pre-tokenizer SmolLM2 ships on
     the Hub: Sequence[Digits(individual_digits=true), ByteLevel(use_regex=true)]
transformers has no entry for tokenizer.ggml.pre = "smollm" and falls back to plain ByteLevel,
so A does not split digits before the GPT-2 regex. B is the reference (it is what the Hub
tokenizer.json and llama.cpp's "smollm" pre-tokenizer do); every A/B difference is recorded.
"""
import json
import os
import random
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "models"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FIX = ROOT / "tests" / "fixtures"

SMOLLM_PRE = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    ],
}

FIXTURE_TEXT = (
    "Hello, world! This is a test of the tokenizer.\n"
    "Punctuation: ... !!! ??? --- (parens) [brackets] {braces} \"quotes\" 'single' `tick` ~@#$%^&*_+=|\\/<>\n"
    "Numbers: 0 7 42 1234567 3.14159 -273.15 1,000,000 2024-06-01 0x1F 1e-9 12345678901234567890\n"
    "Spaces:a  b   c       d|two  |three   |seven       |end\n"
    "trailing two  \n"
    "trailing three   \n"
    "trailing seven       \n"
    "   leading three and  2\n"
    "Tabs:\tone\t\ttwo\t \tmixed \t\n"
    "Windows line\r\nendings\r\n\r\n"
    "Multiple newlines\n\n\n\nand\n\n more\n"
    "Accents: café naïve Ångström résumé façade coöperate\n"
    "Deutsch: Größe, Straße, Äpfel, Übermut, öffentlich.\n"
    "Français: Où est la bibliothèque? C'est très élégant, n'est-ce pas?\n"
    "Español: ¿Dónde está el niño? ¡Mañana será otro día!\n"
    "日本語のテキスト、カタカナとひらがな。中文：你好，世界！\n"
    "한국어 텍스트입니다. 안녕하세요\n"
    "Emoji: 😀 👍🏽 👨‍👩‍👧 🇫🇷🇯🇵 ❤️ ✨\n"
    "Contractions: don't I'LL we've she's they'd it'S I'm You're WE'VE\n"
    "Code: for (int i=0;i<n;++i) {x+=1;}  // comment\n"
    "    def f(x):\n        return x ** 2\n"
    "Special: <|im_start|>user\nhi<|im_end|> and <|endoftext|> and <|im_start|>\n"
    "End without newline"
)

EDGE_STRINGS = [
    "",
    " ",
    "\n\n\n",
    " a",
    "a ",
    "  hello",
    "1",
    "12345678901234567890",
    "a  1",
    "x \n y",
    "\t\tz",
    "   ",
    "\r\n",
    "I'LL don't",
    "<|im_start|>",
    "<|im_start|>user\nHello<|im_end|>\n",
    "<|im_start",
    "é",
    "e\u0301",
    "\u00a0nbsp\u00a0",
    "a\u3000b",
    "😀",
    "👨‍👩‍👧",
    "🇫🇷",
    "3.14159",
    "Ångström",
    "a\U00071866b",  # 0xF1 has no token in SmolLM2's vocabulary: dropped
]

def random_strings(n=120, seed=20240601):
    """Seeded random text heavy in what pre-tokenizers disagree on: runs of mixed whitespace
    before letters / digits / punctuation / newlines, contractions, digits, several scripts,
    combining marks and emoji. Code points are from long-assigned blocks so that the Unicode
    tables of PCRE2 and Oniguruma agree."""
    rng = random.Random(seed)
    atoms = [" ", "  ", "   ", "       ", "\t", "\n", "\n\n", "\r\n", " \n", "\u00a0", "\u3000",
             "'s", "'LL", "'re", "'d", "'t", "'", "don't", "a", "The", "zz", "é", "Ä", "ß",
             "1", "42", "2024", "3.14", "-", ".", "...", "!", "?", "(", ")", "{", "}", "<", ">", "_", "#",
             "日本", "語", "中文", "한국어", "ё", "Ωμέγα", "عرب", "\u0301", "😀", "👍🏽", "👨\u200d👩\u200d👧",
             "🇫🇷", "❤️", "٣", "Ⅷ", "½", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    return ["".join(rng.choice(atoms) for _ in range(rng.randint(1, 14))) for _ in range(n)]


CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Name three primes."},
    ],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ],
]


def byte_decoder():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


BYTE_DEC = byte_decoder()


def unbyte(piece):
    return bytes(BYTE_DEC[c] for c in piece).decode("utf-8")


def smollm2():
    from tokenizers import Regex, Tokenizer, pre_tokenizers
    from transformers import AutoTokenizer
    from transformers.integrations.gguf.gguf_tokenizer_mapping import _LLAMA3_SPLIT
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX as QWEN2_SPLIT

    hf = AutoTokenizer.from_pretrained(str(MODEL_DIR), gguf_file=GGUF_NAME)  # path A
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        tj = json.loads(Path(d, "tokenizer.json").read_text(encoding="utf-8"))
        template = hf.chat_template
    assert tj["pre_tokenizer"].get("type") == "ByteLevel", tj["pre_tokenizer"]
    tj["pre_tokenizer"] = SMOLLM_PRE
    tb = Tokenizer.from_str(json.dumps(tj))  # path B

    def enc_a(text, special):
        return hf.encode(text, add_special_tokens=False, split_special_tokens=not special)

    def enc_b(text, special):
        tb.encode_special_tokens = not special
        ids = tb.encode(text, add_special_tokens=False).ids
        tb.encode_special_tokens = False
        return ids

    vocab = {v: k for k, v in tj["model"]["vocab"].items()}
    added_ids = {a["id"] for a in tj["added_tokens"]}

    def id_bytes(i):
        return vocab[i].encode() if i in added_ids else bytes(BYTE_DEC[c] for c in vocab[i])

    disagreements = []
    cases = []
    named = ([("fixture", FIXTURE_TEXT)] + [(f"edge{i}", s) for i, s in enumerate(EDGE_STRINGS)]
             + [(f"random{i}", s) for i, s in enumerate(random_strings())])
    for name, text in named:
        case = {"name": name, "text": text}
        for special in (False, True):
            a, b = enc_a(text, special), enc_b(text, special)
            if a != b:
                disagreements.append({"text": text, "parse_special": special, "transformers_gguf": a, "tokenizers_smollm_pre": b})
            case["ids_special" if special else "ids"] = b
        # Exact bytes (tokenizers would turn a partial UTF-8 sequence into U+FFFD).
        raw = b"".join(id_bytes(i) for i in case["ids"])
        hf_text = tb.decode(case["ids"], skip_special_tokens=False)
        assert hf_text == raw.decode("utf-8", "replace"), text
        assert (raw == text.encode()) == (hf_text == text), text
        case["decoded_hex"] = raw.hex()
        cases.append(case)

    chats = []
    for msgs in CHATS:
        text = hf.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        ids = enc_b(text, True)
        ids_hf = list(hf.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)["input_ids"])
        if ids_hf != ids:
            disagreements.append({"chat": msgs, "transformers_gguf": ids_hf, "tokenizers_smollm_pre": ids})
        chats.append({"messages": msgs, "add_generation_prompt": True, "text": text, "ids": ids})
    # Without the generation prompt too.
    text = hf.apply_chat_template(CHATS[0], add_generation_prompt=False, tokenize=False)
    chats.append({"messages": CHATS[0], "add_generation_prompt": False, "text": text, "ids": enc_b(text, True)})

    token_text_ids = [0, 1, 2, 17, 198, 216, 30, 905, 28, 49151]
    token_texts = [{"id": i, "hex": id_bytes(i).hex()} for i in token_text_ids]

    # Pre-tokenizer splits of every string, with the configurations the real tokenizer.json
    # files use (regexes taken from transformers, not retyped).
    pretoks = {
        "gpt2": pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        "smollm": pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                           pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]),
        "llama3": pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
                                           pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
        "qwen2": pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
                                          pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
    }
    pre = {name: [[unbyte(p) for p, _ in pt.pre_tokenize_str(c["text"])] for c in cases]
           for name, pt in pretoks.items()}

    out = {
        "model": GGUF_NAME,
        "reference": "tokenizers.Tokenizer from transformers' GGUF conversion with SmolLM2's Hub "
                     "pre-tokenizer Sequence[Digits(individual_digits), ByteLevel] (see "
                     "scripts/make_tokenizer_fixture.py)",
        "n_vocab": len(vocab),
        "bos": 1,
        "eos": 2,
        "cases": cases,
        "chats": chats,
        "token_texts": token_texts,
        "pretokenize": pre,
        "disagreements_transformers_gguf_vs_reference": disagreements,
    }
    FIX.mkdir(parents=True, exist_ok=True)
    (FIX / "tokenizer_smollm2.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    # tokenizer.json for from_hf_dir: minified, merges in the "a b" form (the SPM fixture uses
    # the [a, b] form, so both are covered).
    tj["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in tj["model"]["merges"]]
    d = FIX / "tokenizer_smollm2"
    d.mkdir(exist_ok=True)
    (d / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    cfg = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
           "add_bos_token": False, "chat_template": template}
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return disagreements


# ---- tiny SentencePiece BPE ----------------------------------------------------------------------

SPM_CORPUS_WORDS = (
    "the quick brown fox jumps over the lazy dog while the small cat sleeps in the warm sun "
    "a tokenizer splits text into pieces and the model reads those pieces one by one "
    "hello world this is a test of the byte fallback and of the merge scores "
    "there were three hundred and forty two birds sitting on the old wooden fence "
    "she said that they would never go back to the city after what happened there "
    "numbers like 12 and 345 and 6789 appear in text too as do commas, dots. and questions? "
    "Capital Letters Start Some Words And The Model Must Learn Them As Well"
).split()

SPM_STRINGS = [
    "Hello world",
    "the quick brown fox",
    "  leading spaces",
    "trailing spaces  ",
    "multiple   spaces   inside",
    "tabs\tand\nnewlines\n\n",
    "numbers 12345 and 3.14",
    "café naïve",
    "日本語のテキスト",
    "emoji 😀 and 👨‍👩‍👧 and 🇫🇷",
    "unknown ✓ char",
    "",
    " ",
    "a",
    "<s>inline special</s> tokens",
    "<unk>",
    "The Model Must Learn",
    "the quick brown fox jumps over the lazy dog",
    "there were three hundred and forty two birds sitting on the old wooden fence",
    "she said that they would never go back",
]

TEMPLATES = {
    "llama2": "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}",
    "mistral": "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}",
    "llama3": "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
    "zephyr": "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}",
    "qwen2": "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
}

TEMPLATE_CHATS = [
    [{"role": "user", "content": "  Hello there!  "}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " Hello. "}, {"role": "user", "content": "Bye"}],
]


def spm_tiny():
    import sentencepiece as spm
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    from transformers.tokenization_utils_base import generate_merges

    rng = random.Random(1234)
    lines = [" ".join(rng.choice(SPM_CORPUS_WORDS) for _ in range(rng.randint(5, 15))) for _ in range(3000)]
    out_dir = FIX / "tokenizer_spm_tiny"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        corpus = Path(d, "corpus.txt")
        corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(Path(d, "m")), model_type="bpe", vocab_size=420,
            byte_fallback=True, character_coverage=1.0, normalization_rule_name="identity",
            add_dummy_prefix=True, remove_extra_whitespaces=False, split_digits=True,
            allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            num_threads=1, hard_vocab_limit=False, minloglevel=2)
        sp = spm.SentencePieceProcessor(model_file=str(Path(d, "m.model")))

    n = sp.get_piece_size()
    pieces = [sp.id_to_piece(i) for i in range(n)]
    scores = [sp.get_score(i) for i in range(n)]
    types = []
    for i in range(n):
        types.append(2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i)
                     else 5 if sp.is_unused(i) else 1)

    # tokenizer.json in the layout transformers writes for legacy Llama 2.
    vocab = {p: i for i, p in enumerate(pieces)}
    normal = {p: s for p, s, t in zip(pieces, scores, types) if t == 1}
    merges = generate_merges(vocab, normal)
    specials = [{"id": i, "content": pieces[i], "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": True} for i in (0, 1, 2)]
    tj = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": specials,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [list(m) for m in merges]},
    }
    (out_dir / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    cfg = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True,
           "chat_template": TEMPLATES["llama2"]}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tk = Tokenizer.from_str(json.dumps(tj))

    # The GGUF (tokens + scores + types as llama.cpp's converter writes them, no tensors) is not
    # kept in git: tests/engine/spm_tiny_gguf.h builds it from tokenizer.json and
    # tokenizer_config.json with this rule, checked here: scores are minus the rank of the normal
    # pieces (0 for the others), types 2 unknown / 3 control / 6 byte / 1 normal.
    normal_ids = [i for i, t in enumerate(types) if t == 1]
    assert all(scores[i] == -(i - normal_ids[0]) for i in normal_ids), "spm scores are not -rank"
    assert all(scores[i] == 0 for i, t in enumerate(types) if t != 1)
    assert types[0] == 2 and types[1] == 3 and types[2] == 3

    specials_re = ["<s>", "</s>", "<unk>"]

    def sp_special(text):
        """llama.cpp semantics with parse_special: split out control tokens, sentencepiece each
        piece of text between them (each gets its own "▁" prefix)."""
        ids, i, start = [], 0, 0
        while i < len(text):
            hit = next((s for s in sorted(specials_re, key=len, reverse=True) if text.startswith(s, i)), None)
            if hit:
                if i > start:
                    ids += sp.encode(text[start:i])
                ids.append(vocab[hit])
                i += len(hit)
                start = i
            else:
                i += 1
        if start < len(text):
            ids += sp.encode(text[start:])
        return ids

    cases, disagreements = [], []
    for text in SPM_STRINGS:
        ids_sp = sp.encode(text)
        tk.encode_special_tokens = True
        ids_hf = tk.encode(text, add_special_tokens=False).ids
        tk.encode_special_tokens = False
        ids_hf_special = tk.encode(text, add_special_tokens=False).ids
        ids_sp_special = sp_special(text)
        if ids_sp != ids_hf:
            disagreements.append({"text": text, "sentencepiece": ids_sp, "tokenizers": ids_hf})
        if ids_sp_special != ids_hf_special:
            disagreements.append({"text": text, "parse_special": True, "sentencepiece": ids_sp_special, "tokenizers": ids_hf_special})
        assert sp.decode(ids_sp) == text, (text, sp.decode(ids_sp))
        cases.append({"text": text, "ids_sentencepiece": ids_sp, "ids_tokenizers": ids_hf,
                      "ids_sentencepiece_special": ids_sp_special, "ids_tokenizers_special": ids_hf_special,
                      "decoded_tokenizers_special": tk.decode(ids_hf_special, skip_special_tokens=False),
                      "with_bos": tk.encode(text).ids})

    # The non-legacy layout: no normalizer, a Metaspace pre-tokenizer (prepend_scheme, split).
    variants = {}
    for scheme in ("always", "first", "never"):
        for split in (False, True):
            v = json.loads(json.dumps(tj))
            v["normalizer"] = None
            v["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme, "split": split}
            v["decoder"] = {"type": "Sequence", "decoders": [
                {"type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme, "split": split},
                {"type": "ByteFallback"}, {"type": "Fuse"}]}
            tv = Tokenizer.from_str(json.dumps(v))
            rows = []
            for text in SPM_STRINGS:
                tv.encode_special_tokens = True
                ids = tv.encode(text, add_special_tokens=False).ids
                tv.encode_special_tokens = False
                ids_special = tv.encode(text, add_special_tokens=False).ids
                rows.append({"text": text, "ids": ids, "ids_special": ids_special})
            variants[f"{scheme}_{'split' if split else 'nosplit'}"] = {
                "pre_tokenizer": v["pre_tokenizer"], "decoder": v["decoder"], "cases": rows}

    # Chat templates rendered by transformers' Jinja environment (bos "<s>", eos "</s>").
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    chats = []
    for name, tmpl in TEMPLATES.items():
        for msgs in TEMPLATE_CHATS:
            for agp in (True, False):
                try:
                    text = fast.apply_chat_template(msgs, chat_template=tmpl, add_generation_prompt=agp, tokenize=False)
                except Exception as e:  # raise_exception in the template
                    text = None
                    err = str(e)
                chats.append({"template": name, "messages": msgs, "add_generation_prompt": agp,
                              "text": text, **({} if text is not None else {"error": err})})

    exp = {"n_vocab": n, "bos": 1, "eos": 2, "unk": 0, "cases": cases, "chats": chats,
           "metaspace_variants": variants,
           "templates": TEMPLATES, "disagreements_sentencepiece_vs_tokenizers": disagreements}
    (out_dir / "expected.json").write_text(json.dumps(exp, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return disagreements


def main():
    d1 = smollm2()
    d2 = spm_tiny()
    print(f"SmolLM2: {len(d1)} disagreement(s) between transformers' GGUF conversion and the reference")
    for d in d1:
        print("  ", json.dumps(d, ensure_ascii=False)[:300])
    print(f"SPM tiny: {len(d2)} disagreement(s) between sentencepiece and tokenizers")
    for d in d2:
        print("  ", json.dumps(d, ensure_ascii=False)[:300])
    total = sum(f.stat().st_size for f in FIX.rglob("*") if f.is_file() and "tokenizer" in str(f))
    print(f"fixture bytes: {total}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
