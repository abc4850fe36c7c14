"""Capture a kvscope trace (docs/trace-format.md, schema version 1) with Hugging Face
transformers: a model kvscope's engine cannot run, or on a GPU machine, in the same schema, so
that `kvscope replay`, `kvscope-view` and `kvscope figures` read it like a trace of their own.

    python3 -m kvscope.capture_hf --model MODEL (--text-file F | --prompt P | --ids-from T.h5)
        [--ctx N] [--layers 0,5,10-12] [--dtype f16|f32] [--device cpu|cuda] --out T.h5

MODEL: a Hugging Face folder or hub name, or a GGUF file (transformers dequantizes it). One
forward pass over the tokens (no generation), in float32 (or --torch-dtype), eager attention:
the attention function of the model's module is wrapped so that every layer hands over its
post-RoPE q and k, v, the attention output before o_proj and the log-sum-exp of every query
row, computed from the same scores the softmax used. Hugging Face checkpoints rotate the
halves of q/k together, so rope_pairing is "half". --ids-from takes the tokens of an existing
trace (kvscope's own), which makes the two traces comparable tensor by tensor.

Needs torch and transformers (and gguf for a GGUF file); the rest of the package does not.
"""
import argparse
import datetime
import json
import os
import sys

import numpy as np

from ._common import KvscopeError
from .trace import TOP_K


def parse_layers(text, n_layer):
    if text in ("", "all"):
        return list(range(n_layer))
    out = set()
    for part in text.split(","):
        a, _, b = part.partition("-")
        try:
            lo, hi = int(a), int(b) if b else int(a)
        except ValueError:
            raise KvscopeError(f"--layers: '{part}' is not a layer or a range like 10-12")
        if lo < 0 or hi >= n_layer or lo > hi:
            raise KvscopeError(f"--layers: '{part}' is outside [0, {n_layer})")
        out.update(range(lo, hi + 1))
    return sorted(out)


def gguf_name(path):
    """general.name of a GGUF file (what kvscope's own traces record as model_name)."""
    try:
        from gguf import GGUFReader
        field = GGUFReader(path).fields.get("general.name")
        if field is not None:
            return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
    except Exception:  # a name only: fall back to the file name
        pass
    return os.path.splitext(os.path.basename(path))[0]


def load(args):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if args.quiet:
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    kw = {"attn_implementation": "eager",
          "dtype": getattr(torch, args.torch_dtype)}
    path = args.model
    if path.endswith(".gguf"):
        d, f = os.path.split(os.path.abspath(path))
        tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, **kw)
    else:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, **kw)
    return tok, model.to(args.device).eval()


def rope_attrs(cfg):
    """The schema's rope_* attributes from a transformers config (v4 rope_scaling or v5
    rope_parameters)."""
    rp = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    theta = rp.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    kind = rp.get("rope_type", rp.get("type", "default")) or "default"
    kind = {"default": "none"}.get(kind, kind)
    if kind not in ("none", "linear", "llama3"):
        raise KvscopeError(f"RoPE scaling '{kind}' has no name in the trace schema (none, linear, "
                           "llama3)")
    return {"rope_theta": float(theta), "rope_scaling_type": kind,
            "rope_scaling_factor": float(rp.get("factor", 1.0) or 1.0),
            "rope_scaling_low_freq_factor": float(rp.get("low_freq_factor", 1.0) or 1.0),
            "rope_scaling_high_freq_factor": float(rp.get("high_freq_factor", 4.0) or 4.0),
            "rope_scaling_original_context": int(rp.get("original_max_position_embeddings", 0)
                                                 or 0)}


class Tap:
    """Wraps the eager attention function of the model's module and keeps, per captured
    layer, q [H, T, d], k and v [Hkv, T, d], o [H, T, d] and lse [H, T] (numpy float32)."""

    def __init__(self, model, layers):
        import torch
        self.torch = torch
        self.layers = set(layers)
        self.got = {}
        attn = model.model.layers[0].self_attn
        self.module = sys.modules[type(attn).__module__]
        if not hasattr(self.module, "eager_attention_forward"):
            raise KvscopeError(f"{type(attn).__name__}: no eager_attention_forward in "
                               f"{self.module.__name__} to tap (an architecture this adapter "
                               "does not know)")
        self.orig = self.module.eager_attention_forward
        self.scaling = float(attn.scaling)

    def __enter__(self):
        torch = self.torch

        def tapped(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
            out, weights = self.orig(module, query, key, value, attention_mask, scaling,
                                     dropout, **kw)
            layer = getattr(module, "layer_idx", None)
            if layer in self.layers:
                groups = query.shape[1] // key.shape[1]
                k_rep = key.repeat_interleave(groups, dim=1).float()
                s = torch.matmul(query.float(), k_rep.transpose(2, 3)) * scaling
                if attention_mask is not None:
                    s = s + attention_mask.float()
                lse = torch.logsumexp(s, dim=-1)
                f = lambda x: x[0].detach().float().cpu().numpy()
                # out: [b, t, h, d] -> [h, t, d]
                self.got[layer] = (f(query), f(key), f(value), f(out.transpose(1, 2)), f(lse))
            return out, weights

        self.module.eager_attention_forward = tapped
        return self

    def __exit__(self, *exc):
        self.module.eager_attention_forward = self.orig


def check_inputs(args):
    """Everything that can be wrong with the arguments, before minutes of model loading:
    returns (token ids or None, text or None, task kind)."""
    if args.model.endswith(".gguf") and not os.path.isfile(args.model):
        raise KvscopeError(f"--model: no such file '{args.model}'")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise KvscopeError(f"--out '{args.out}': its folder does not exist")
    if args.ctx < 0:
        raise KvscopeError(f"--ctx must be >= 0 (got {args.ctx})")
    if args.ids_from:
        from .trace import open_trace
        with open_trace(args.ids_from) as t:
            return (t.tokens()["id"].astype(np.int64), None,
                    "text" if t.task["kind"] == "text" else "prompt")
    if args.text_file:
        try:
            text = open(args.text_file, encoding="utf-8").read()
        except OSError as e:
            raise KvscopeError(f"--text-file '{args.text_file}': {e.strerror}")
        except UnicodeDecodeError:
            raise KvscopeError(f"--text-file '{args.text_file}' is not UTF-8 text")
        if not text.strip():
            raise KvscopeError(f"--text-file '{args.text_file}' is empty")
        return None, text, "text"
    if not args.prompt:
        raise KvscopeError("--prompt is empty")
    return None, args.prompt, "prompt"


def token_ids(args, tok, given):
    ids, text, kind = given
    if ids is None:
        ids = np.array(tok(text)["input_ids"], dtype=np.int64)
    if args.ctx:
        ids = ids[:args.ctx]
    if ids.size == 0:
        raise KvscopeError("no tokens to capture")
    return ids, kind


def capture(args):
    given = check_inputs(args)
    if args.quiet:
        os.environ["TQDM_DISABLE"] = "1"  # before tqdm is imported: the GGUF loader's bar
    try:
        import torch
        import transformers
    except ImportError as e:
        raise KvscopeError(f"capture_hf needs torch and transformers ({e}); pip install torch "
                           "transformers (and gguf for a GGUF file)")
    import h5py
    tok, model = load(args)
    cfg = model.config
    n_layer = cfg.num_hidden_layers
    n_head = cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_head
    d = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    layers = parse_layers(args.layers, n_layer)
    ids, kind = token_ids(args, tok, given)
    T = len(ids)
    with Tap(model, layers) as tap, torch.no_grad():
        logits = model(torch.tensor(ids[None], device=args.device)).logits[0].float()
    lse_logits = torch.logsumexp(logits, -1)
    logprob = np.full(T, np.nan)
    if T > 1:
        nxt = torch.tensor(ids[1:], device=logits.device)
        logprob[:-1] = (logits[:-1].gather(1, nxt[:, None])[:, 0] - lse_logits[:-1]).double().cpu().numpy()
    topv, topi = torch.topk(logits, min(TOP_K, logits.shape[-1]), dim=-1)
    texts = [tok.decode([int(i)]).encode("utf-8") for i in ids]

    out = args.out
    part = out + ".partial"
    store = np.float16 if args.dtype == "f16" else np.float32
    comp = {} if args.compress == "none" else {"compression": "gzip", "compression_opts": 1,
                                                "shuffle": True}
    chunk_t = max(1, min(T, 256))
    name = (gguf_name(args.model) if args.model.endswith(".gguf") else
            os.path.basename(str(getattr(cfg, "name_or_path", "") or args.model).rstrip("/")))
    try:
        with h5py.File(part, "w", libver=("v110", "v110")) as f:
            A = f.attrs
            A["format"] = np.bytes_("kvscope-trace")
            A["schema_version"] = np.int64(1)
            A["kvscope_version"] = np.bytes_(f"capture_hf 0.1.0 (transformers {transformers.__version__})")
            A["model_name"] = np.bytes_(name or "model")
            A["model_arch"] = np.bytes_(cfg.model_type)
            A["model_path"] = np.bytes_(args.model)
            A["n_layer"], A["n_head"] = np.int64(n_layer), np.int64(n_head)
            A["n_head_kv"], A["head_dim"] = np.int64(n_kv), np.int64(d)
            A["layers"] = np.array(layers, dtype=np.int32)
            for k, v in rope_attrs(cfg).items():
                A[k] = np.bytes_(v) if isinstance(v, str) else (
                    np.int64(v) if isinstance(v, int) else np.float64(v))
            A["rope_pairing"] = np.bytes_("half")
            A["attn_scale"] = np.float64(tap.scaling)
            A["dtype"] = np.bytes_(args.dtype)
            A["compression"] = np.bytes_("none" if args.compress == "none" else "gzip:1")
            A["prompt_len"] = np.int64(T)
            A["n_tokens"] = np.int64(T)
            A["created"] = np.bytes_(datetime.datetime.now(datetime.timezone.utc)
                                     .strftime("%Y-%m-%dT%H:%M:%SZ"))
            A["command_line"] = np.bytes_(" ".join(sys.argv))
            A["complete"] = True
            A["config_json"] = np.bytes_(json.dumps({"adapter": "kvscope.capture_hf",
                                                     "args": vars(args),
                                                     "model_config": cfg.to_dict()},
                                                    default=str))
            kvq = np.arange(n_head, dtype=np.int32) // (n_head // n_kv)
            f["kv_head_of_q_head"] = kvq
            g = f.create_group("tokens")
            g["ids"] = ids.astype(np.int32)
            g["positions"] = np.arange(T, dtype=np.int32)
            width = max(1, max(len(x) for x in texts))
            g["text"] = np.array(texts, dtype=f"S{width}")
            g["logprob"] = logprob
            g["logits_lse"] = lse_logits.cpu().numpy().astype(np.float32)
            g["topk_ids"] = topi.cpu().numpy().astype(np.int32)
            g["topk_logits"] = topv.cpu().numpy().astype(np.float32)
            labels = {"q": ("head", "token", "dim"), "k": ("kv_head", "token", "dim"),
                      "v": ("kv_head", "token", "dim"), "o": ("head", "token", "dim"),
                      "lse": ("head", "token")}
            w = max(2, len(str(max(n_layer - 1, 0))))
            for l in layers:
                q, k, v, o, lse = tap.got[l]
                lg = f.create_group(f"layers/{l:0{w}d}")
                for key, arr, dt in (("q", q, store), ("k", k, store), ("v", v, store),
                                     ("o", o, store), ("lse", lse, np.float32)):
                    chunks = (arr.shape[0], chunk_t) + arr.shape[2:]
                    ds = lg.create_dataset(key, data=arr.astype(dt), chunks=chunks,
                                           maxshape=(arr.shape[0], None) + arr.shape[2:], **comp)
                    for i, lab in enumerate(labels[key]):
                        ds.dims[i].label = lab
            tg = f.create_group("task")
            tg.attrs["kind"] = np.bytes_(kind)
        os.replace(part, out)
    except BaseException:
        if os.path.exists(part):
            os.remove(part)
        raise
    return T, layers


def main(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m kvscope.capture_hf", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="Hugging Face folder or name, or a GGUF file")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text-file")
    src.add_argument("--prompt")
    src.add_argument("--ids-from", help="take the token ids of an existing trace")
    p.add_argument("--ctx", type=int, default=0, help="keep the first N tokens (0 = all)")
    p.add_argument("--layers", default="all")
    p.add_argument("--dtype", choices=["f16", "f32"], default="f16", help="storage of q, k, v, o")
    p.add_argument("--compress", choices=["gzip:1", "none"], default="gzip:1")
    p.add_argument("--torch-dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True)
    p.add_argument("-q", "--quiet", action="store_true")

    def error(msg):
        raise KvscopeError(f"capture_hf: {msg}")
    p.error = error
    try:
        a = p.parse_args(argv)
        T, layers = capture(a)
    except KvscopeError as e:
        print(f"kvscope: error: {e}", file=sys.stderr)
        return 1
    if not a.quiet:
        print(f"wrote {a.out}: {T} tokens, layers {layers[0]}..{layers[-1]} ({len(layers)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
