#!/usr/bin/env python3
"""Produce the reference fixtures that the engine's tests compare against.

Runs Hugging Face transformers on the same GGUF file the engine uses (transformers dequantizes
GGUF weights to fp32 and undoes llama.cpp's Q/K permutation), records, for three prompts of at
least 64 tokens:
  - the token ids (HF's tokenizer built from the GGUF vocabulary),
  - the top-1 token at every position,
  - logits at every position for a fixed set of vocabulary ids (the top 32 at that position
    plus 224 ids drawn once with a fixed seed), so the fixture stays small,
  - post-RoPE q, k, v and the attention output (before o_proj) of two layers for the first
    8 tokens of the first prompt.
Writes tests/fixtures/ref_logits.json + ref_logits.bin (little-endian float32).

Needs: pip install torch transformers gguf (not needed by CI; the fixtures are committed).
Usage: python3 scripts/make_reference.py [--model models/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.models.llama import modeling_llama

PROMPTS = [
    # Narrative prose (public domain: Lewis Carroll, Alice's Adventures in Wonderland, ch. 1).
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
    "nothing to do: once or twice she had peeped into the book her sister was reading, but it had "
    "no pictures or conversations in it, 'and what is the use of a book,' thought Alice 'without "
    "pictures or conversations?' So she was considering in her own mind (as well as she could, for "
    "the hot day made her feel very sleepy and stupid)",
    # Code.
    "def fibonacci(n: int) -> list[int]:\n    \"\"\"Return the first n Fibonacci numbers.\"\"\"\n"
    "    seq = [0, 1]\n    while len(seq) < n:\n        seq.append(seq[-1] + seq[-2])\n"
    "    return seq[:n]\n\n\nif __name__ == \"__main__\":\n    for i, x in enumerate(fibonacci(12)):\n"
    "        print(f\"{i:3d} {x:6d}\")\n",
    # A chat turn in the model's template.
    None,
]
CHAT = [{"role": "user", "content": "Explain in three short sentences why the sky is blue, and "
         "then give one everyday example of the same effect that a child could observe at home or "
         "outside on a sunny afternoon."}]
N_SELECT_RANDOM = 224
N_TOP = 32
TAP_LAYERS = [0, 17]
TAP_TOKENS = 8
PPL_CTX = 256


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    d, f = os.path.split(os.path.abspath(args.model))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    model.eval()
    cfg = model.config
    n_vocab = cfg.vocab_size

    prompts = list(PROMPTS)
    prompts[2] = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)

    rng = np.random.default_rng(1234)
    random_ids = np.sort(rng.choice(n_vocab, N_SELECT_RANDOM, replace=False))

    # Capture post-RoPE q/k per layer by wrapping apply_rotary_pos_emb (called once per layer).
    captured = []
    orig_rope = modeling_llama.apply_rotary_pos_emb

    def rope_tap(q, k, *a, **kw):
        qo, ko = orig_rope(q, k, *a, **kw)
        captured.append((qo.detach().clone(), ko.detach().clone()))
        return qo, ko

    vs, attn_out = {}, {}

    def v_hook(il):
        return lambda mod, inp, out: vs.__setitem__(il, out.detach().clone())

    def o_pre_hook(il):
        return lambda mod, inp: attn_out.__setitem__(il, inp[0].detach().clone())

    hooks = []
    for il in TAP_LAYERS:
        layer = model.model.layers[il].self_attn
        hooks.append(layer.v_proj.register_forward_hook(v_hook(il)))
        hooks.append(layer.o_proj.register_forward_pre_hook(o_pre_hook(il)))

    blobs = []
    offset = 0

    def add(arr):
        nonlocal offset
        a = np.ascontiguousarray(arr, dtype="<f4")
        blobs.append(a.tobytes())
        o = offset
        offset += a.size
        return {"offset": o, "shape": list(a.shape)}

    cases = []
    for pi, text in enumerate(prompts):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert len(ids) >= 64, (pi, len(ids))
        captured.clear()
        modeling_llama.apply_rotary_pos_emb = rope_tap
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float().numpy()
        modeling_llama.apply_rotary_pos_emb = orig_rope
        top1 = logits.argmax(-1).tolist()
        sel = np.zeros((len(ids), N_TOP + N_SELECT_RANDOM), dtype=np.int64)
        for t in range(len(ids)):
            top = np.argsort(-logits[t])[:N_TOP]
            sel[t, :N_TOP] = top
            sel[t, N_TOP:] = random_ids
        vals = np.take_along_axis(logits, sel, axis=1)
        case = {"text": text, "ids": ids, "top1": top1, "select_ids": sel.tolist(),
                "select_logits": add(vals)}
        if pi == 0:
            taps = []
            n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
            hd = cfg.hidden_size // n_head
            for il in TAP_LAYERS:
                q, k = captured[il]  # [1, n_head, T, d], [1, n_kv, T, d]
                v = vs[il][0].reshape(-1, n_kv, hd).transpose(0, 1)  # [n_kv, T, d]
                o = attn_out[il][0].reshape(-1, n_head, hd).transpose(0, 1)
                T = TAP_TOKENS
                taps.append({"layer": il,
                             "q": add(q[0, :, :T].numpy()), "k": add(k[0, :, :T].numpy()),
                             "v": add(v[:, :T].numpy()), "out": add(o[:, :T].numpy())})
            case["taps"] = taps
        cases.append(case)
        print(f"prompt {pi}: {len(ids)} tokens, top1 head {top1[:8]}", file=sys.stderr)

    for h in hooks:
        h.remove()
    meta = {
        "generator": "scripts/make_reference.py",
        "transformers": transformers.__version__, "torch": torch.__version__,
        "model": f, "n_vocab": n_vocab, "rope_pairing_of_taps": "half",
        "cases": cases,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "ref_logits.bin"), "wb") as fh:
        for b in blobs:
            fh.write(b)
    with open(os.path.join(args.out, "ref_logits.json"), "w") as fh:
        json.dump(meta, fh)
    print(f"wrote {args.out}/ref_logits.json and ref_logits.bin ({offset * 4} bytes)", file=sys.stderr)

    # End to end (tokenizer + model): perplexity of a fixture text in windows of PPL_CTX tokens,
    # each window scored from its second token on (as `kvscope perplexity --ctx PPL_CTX`).
    with open(os.path.join(args.out, "alice_ch1.txt"), encoding="utf-8") as fh:
        text = fh.read()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    nll, n = 0.0, 0
    for w0 in range(0, len(ids), PPL_CTX):
        win = ids[w0:w0 + PPL_CTX]
        if len(win) < 2:
            break
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([win])).logits[0].double(), -1)
        nll -= sum(lp[t, win[t + 1]].item() for t in range(len(win) - 1))
        n += len(win) - 1
    ppl = {"text_file": "alice_ch1.txt", "ctx": PPL_CTX, "n_tokens": len(ids),
           "tokens_scored": n, "perplexity": float(np.exp(nll / n))}
    with open(os.path.join(args.out, "ref_perplexity.json"), "w") as fh:
        json.dump(ppl, fh, indent=1)
    print(f"perplexity reference: {ppl}", file=sys.stderr)


if __name__ == "__main__":
    main()
