#!/usr/bin/env python3
"""Reference logits from Hugging Face transformers for tiny random models, one per code path the
real model does not cover: Llama (plain, tied embeddings), Llama 3 RoPE scaling, linear RoPE
scaling, Qwen2 (QKV bias) and Mistral. tests/engine/test_tiny_model.cpp builds the same models
(same config.json, same weights) and runs them through the engine from safetensors and from GGUF.

The weights are not stored: both sides compute them from a hash (splitmix64 of the tensor name
and element index, see `weight` below and kvs::test::hashed_weights in tests/engine/tiny_model.h),
with 20 random bits and power-of-two scales so that every value is exact in float32 on both
sides. The fixture holds,
per model, the config.json transformers ran with, the token ids and the logits (float32).

Writes tests/fixtures/tiny_reference.json (+ tiny_reference.bin, little-endian float32).
Needs torch + transformers (pip install torch transformers; not needed by CI, the fixture is
committed). Usage: python3 scripts/make_tiny_reference.py [--out tests/fixtures]
"""
import argparse
import copy
import json
import os

import numpy as np
import torch
import transformers

M64 = (1 << 64) - 1
N_VOCAB, N_EMBD, N_HEAD, N_HEAD_KV, N_FF, N_LAYER = 37, 24, 4, 2, 40, 2
N_TOKENS = 48
SEED = 2024


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def weight(seed, name, n, base, scale):
    """base + scale * (2u - 1), u = (splitmix64(seed ^ fnv1a64(name) + i) >> 44) / 2^20: 20
    random bits, exact in float32 for base in {0, 1} and scale in {0.25, 0.5}."""
    h = (seed ^ fnv1a64(name)) & M64
    u = np.array([splitmix64((h + i) & M64) >> 44 for i in range(n)], dtype=np.float64) / 2**20
    w = base + scale * (2 * u - 1)
    w32 = w.astype(np.float32)
    assert np.array_equal(w32.astype(np.float64), w), name
    return w32


def hf_weights(spec, seed):
    """The Hugging Face tensors of the model, in the order and with the values of
    kvs::test::hashed_weights."""
    d = N_EMBD // N_HEAD
    w = {}

    def mat(name, r, c):
        w[name] = weight(seed, name, r * c, 0.0, 0.5).reshape(r, c)

    def vec(name, n, base, scale):
        w[name] = weight(seed, name, n, base, scale)

    mat("model.embed_tokens.weight", N_VOCAB, N_EMBD)
    vec("model.norm.weight", N_EMBD, 1.0, 0.25)
    if not spec["tied"]:
        mat("lm_head.weight", N_VOCAB, N_EMBD)
    for l in range(N_LAYER):
        p = f"model.layers.{l}."
        vec(p + "input_layernorm.weight", N_EMBD, 1.0, 0.25)
        vec(p + "post_attention_layernorm.weight", N_EMBD, 1.0, 0.25)
        mat(p + "self_attn.q_proj.weight", N_HEAD * d, N_EMBD)
        mat(p + "self_attn.k_proj.weight", N_HEAD_KV * d, N_EMBD)
        mat(p + "self_attn.v_proj.weight", N_HEAD_KV * d, N_EMBD)
        mat(p + "self_attn.o_proj.weight", N_EMBD, N_HEAD * d)
        if spec["bias"]:
            vec(p + "self_attn.q_proj.bias", N_HEAD * d, 0.0, 0.25)
            vec(p + "self_attn.k_proj.bias", N_HEAD_KV * d, 0.0, 0.25)
            vec(p + "self_attn.v_proj.bias", N_HEAD_KV * d, 0.0, 0.25)
        mat(p + "mlp.gate_proj.weight", N_FF, N_EMBD)
        mat(p + "mlp.up_proj.weight", N_FF, N_EMBD)
        mat(p + "mlp.down_proj.weight", N_EMBD, N_FF)
    return w


def hf_config(spec):
    """config.json, as kvs::test::hf_config writes it (transformers 4 keys)."""
    arch = spec["arch"]
    c = {
        "architectures": [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                           "mistral": "MistralForCausalLM"}[arch]],
        "model_type": arch,
        "hidden_size": N_EMBD,
        "num_hidden_layers": N_LAYER,
        "num_attention_heads": N_HEAD,
        "num_key_value_heads": N_HEAD_KV,
        "intermediate_size": N_FF,
        "vocab_size": N_VOCAB,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500.0,
        "tie_word_embeddings": spec["tied"],
    }
    if spec["rope"] == "llama3":
        c["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    elif spec["rope"] == "linear":
        c["rope_scaling"] = {"rope_type": "linear", "factor": 4.0}
    if arch == "mistral":
        c["sliding_window"] = None  # (the engine has no sliding window; 48 tokens need none)
    return c


SPECS = [
    {"name": "llama", "arch": "llama", "tied": False, "bias": False, "rope": "none"},
    {"name": "llama-tied", "arch": "llama", "tied": True, "bias": False, "rope": "none"},
    {"name": "llama3-rope", "arch": "llama", "tied": False, "bias": False, "rope": "llama3"},
    {"name": "linear-rope", "arch": "llama", "tied": False, "bias": False, "rope": "linear"},
    {"name": "qwen2-bias", "arch": "qwen2", "tied": False, "bias": True, "rope": "none"},
    {"name": "mistral", "arch": "mistral", "tied": False, "bias": False, "rope": "none"},
]


def run(spec, seed, ids):
    cfg_dict = hf_config(spec)
    # (a deep copy: transformers 5 writes rope_theta into the rope_scaling dict it is given)
    cfg = transformers.AutoConfig.for_model(**copy.deepcopy(cfg_dict))
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    model = model.float().eval()
    w = {k: torch.from_numpy(v) for k, v in hf_weights(spec, seed).items()}
    missing, unexpected = model.load_state_dict(w, strict=False)
    missing = [m for m in missing if not (spec["tied"] and m == "lm_head.weight")
               and "rotary_emb" not in m]
    assert not missing and not unexpected, (missing, unexpected)
    if spec["tied"]:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float().numpy()
    inv_freq = model.model.rotary_emb.inv_freq.float().numpy().tolist()
    return cfg_dict, logits, inv_freq


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    ids = rng.integers(0, N_VOCAB, N_TOKENS).tolist()
    blobs, offset, models = [], 0, []
    for i, spec in enumerate(SPECS):
        seed = SEED + i
        cfg, logits, inv_freq = run(spec, seed, ids)
        a = np.ascontiguousarray(logits, dtype="<f4")
        blobs.append(a.tobytes())
        models.append({**spec, "seed": seed, "config": cfg, "rope_inv_freq": inv_freq,
                       "logits": {"offset": offset, "shape": list(a.shape)}})
        offset += a.size
        print(f"{spec['name']}: logits {a.shape}, |max| {np.abs(a).max():.3f}, "
              f"inv_freq {np.round(inv_freq, 6).tolist()}")
    meta = {
        "generator": "scripts/make_tiny_reference.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dims": {"n_vocab": N_VOCAB, "n_embd": N_EMBD, "n_head": N_HEAD, "n_head_kv": N_HEAD_KV,
                 "n_ff": N_FF, "n_layer": N_LAYER},
        "ids": ids,
        "models": models,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "tiny_reference.bin"), "wb") as f:
        f.write(b"".join(blobs))
    with open(os.path.join(args.out, "tiny_reference.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
