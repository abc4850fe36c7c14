#!/usr/bin/env python3
"""Writes tests/kernels/fixtures/: q8_0 / q4_0 blocks made by gguf-py (gguf.quants), which
reproduces ggml's reference quantizers bit for bit. test_ggml_blocks.cpp packs the same inputs
with kvscope's kernels and compares byte for byte. Needs numpy and gguf (pip install gguf);
the C++ tests need neither. Run from the repository root: python3 scripts/make_kernel_fixture.py

Files (all little-endian):
  ggml_<case>_input.f32   fp32 [n_tok, d] row-major
  ggml_<case>.q8_0        n_tok * ceil(d/32) blocks of 34 bytes
  ggml_<case>.q4_0        n_tok * ceil(d/32) blocks of 18 bytes
  ggml_blocks.json        the cases, shapes and the gguf version used
For d not a multiple of 32 the row is zero-padded to full blocks before gguf quantizes it
(kvscope's documented extension of the format).
"""
import importlib.metadata
import json
import pathlib

import numpy as np
from gguf.quants import quantize
from gguf import GGMLQuantizationType as T

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "kernels" / "fixtures"
QK = 32


def make_input(rng, n_tok, d):
    # Rows of very different magnitudes, as K/V of different layers and heads are.
    mags = 10.0 ** rng.uniform(-3, 3, size=(n_tok, 1))
    x = (rng.standard_normal((n_tok, d)) * mags).astype(np.float32)
    # Edge blocks in row 0: an all-zero block; a block whose largest |x| appears with both signs
    # (q4_0 must take the first one, here the negative); a block of one repeated value.
    if d >= QK:
        x[0, :QK] = 0.0
    if d >= 2 * QK:
        x[0, QK:2 * QK] = rng.uniform(-1, 1, QK).astype(np.float32)
        x[0, QK + 3] = -2.5
        x[0, QK + 20] = 2.5
    if n_tok > 1 and d >= QK:
        x[1, :QK] = np.float32(0.7)
    # Exact rounding ties: q8_0 with amax 127 (d = 1) on values k + 0.5 (roundf rounds half away
    # from zero, not to even); q4_0 with max -8 (d = 1) on values where x + 8.5 is an integer.
    if n_tok > 2 and d >= 2 * QK:
        x[2, :QK] = np.array([127.0] + [k + 0.5 for k in range(-16, 15)], dtype=np.float32)
        x[2, QK:2 * QK] = np.array([-8.0] + [k - 0.5 for k in range(-7, 8)] * 2 + [7.0],
                                   dtype=np.float32)
    # q4_0 values where x * id + 8.5 differs when fused into one FMA (ggml's C does not fuse):
    # with max 12 (id = -0.6666667), 8.25 * id rounds to -5.5 exactly, the FMA gives 2.9999999.
    if n_tok > 3 and d >= 2 * QK:
        quarters = np.arange(-47, 48, dtype=np.float32) / 4  # multiples of 0.25 in (-12, 12)
        x[3, :QK] = np.concatenate([[12.0, 8.25, 11.25, 2.75, 6.75], rng.choice(quarters, QK - 5)])
        x[3, QK:2 * QK] = np.concatenate([[20.0, 16.25, 6.25, -3.75], rng.choice(quarters, QK - 4)])
    return x


def main():
    rng = np.random.default_rng(20240607)
    OUT.mkdir(parents=True, exist_ok=True)
    cases = []
    for name, n_tok, d in [("d64", 7, 64), ("d40", 3, 40), ("d128", 2, 128)]:
        x = make_input(rng, n_tok, d)
        nb = (d + QK - 1) // QK
        padded = np.zeros((n_tok, nb * QK), dtype=np.float32)
        padded[:, :d] = x
        x.tofile(OUT / f"ggml_{name}_input.f32")
        entry = {"name": name, "n_tok": n_tok, "d": d}
        for fmt, qt in [("q8_0", T.Q8_0), ("q4_0", T.Q4_0)]:
            q = quantize(padded, qt)
            q.tofile(OUT / f"ggml_{name}.{fmt}")
            entry[fmt + "_bytes"] = int(q.nbytes)
        cases.append(entry)
    manifest = {
        "generator": "scripts/make_kernel_fixture.py",
        "gguf_version": importlib.metadata.version("gguf"),
        "numpy_version": np.__version__,
        "cases": cases,
    }
    (OUT / "ggml_blocks.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
