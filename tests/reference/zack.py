"""ZACK (Zhang & Shen 2024, arXiv 2408.04107) as kvscope runs it (policies/zack.cpp), prefill
mode: at P each (layer, KV head) takes the SVD of its prompt's K rows and, apart, V rows (as the
cache stores them: fp16), keeps the leading right singular vectors holding `energy` of the
squared singular values (or a fixed rank), and stores every row from then on as its fp16
coefficients in that basis; attention reads the reconstruction. What is compared with
kvscope's results file: the bytes of every unit at every step (exact: (t + 1) rows of 2 r_k +
2 r_v bytes plus the two fp32 bases, 4 + 4 d r each) and the output error of every unit at
every step (|o_c - o| / |o| per query head against the trace's o, mean over the KV head's query
heads; within 2e-3: numpy's SVD and float64 against kvscope's eigen-solver and fp32)."""
import h5py
import numpy as np


def basis(x, energy, rank):
    _, s, vt = np.linalg.svd(x.astype(np.float64), full_matrices=False)
    e = s ** 2
    if rank:
        r = min(rank, x.shape[1])
    else:
        r = int(np.searchsorted(np.cumsum(e), energy * e.sum()) + 1)
        r = min(r, x.shape[1])
    return vt[:r]  # [r, d], orthonormal rows


def project(x, b):
    c = (x.astype(np.float64) @ b.T).astype(np.float16).astype(np.float64)  # fp16 coefficients
    return c @ b.astype(np.float32).astype(np.float64)


def check(results_path, trace_path, energy=0.99, rank=0):
    """Returns (units compared, list of differences)."""
    diffs = []
    with h5py.File(trace_path, "r") as f, h5py.File(results_path, "r") as r:
        g = r["runs/0000"]
        P = int(g.attrs["prefill_len"])
        steps = g["steps"][...]
        kb = g["bytes"][...]  # [S, L, Hkv]
        err = g["out_rel_err"][...]
        kvq = f["kv_head_of_q_head"][...]
        scale = float(f.attrs["attn_scale"])
        layers = [int(x) for x in g["layers"][...]]
        n = 0
        for li, layer in enumerate(layers):
            tl = f["layers/%02d" % layer]
            q = tl["q"][...].astype(np.float64)
            k = tl["k"][...].astype(np.float16)
            v = tl["v"][...].astype(np.float16)
            o = tl["o"][...].astype(np.float64)
            d = k.shape[2]
            for gi in range(k.shape[0]):
                bk, bv = basis(k[gi, :P], energy, rank), basis(v[gi, :P], energy, rank)
                rk, rv = bk.shape[0], bv.shape[0]
                kh, vh = project(k[gi], bk), project(v[gi], bv)
                heads = np.nonzero(kvq == gi)[0]
                for si, t in enumerate(steps):
                    n += 1
                    want = (t + 1) * (2 * rk + 2 * rv) + (4 + 4 * d * rk) + (4 + 4 * d * rv)
                    if kb[si, li, gi] != want:
                        diffs.append(f"layer {layer} kv {gi} step {t}: bytes {kb[si, li, gi]}, "
                                     f"reference {want} (r_k {rk}, r_v {rv})")
                    e = 0.0
                    for h in heads:
                        s = scale * (kh[: t + 1] @ q[h, t])
                        p = np.exp(s - s.max())
                        oc = (p / p.sum()) @ vh[: t + 1]
                        e += np.linalg.norm(oc - o[h, t]) / np.linalg.norm(o[h, t])
                    e /= len(heads)
                    if abs(e - err[si, li, gi]) > 2e-3:
                        diffs.append(f"layer {layer} kv {gi} step {t}: out err "
                                     f"{err[si, li, gi]:.5f}, reference {e:.5f}")
    return n, diffs
