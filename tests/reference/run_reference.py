#!/usr/bin/env python3
"""Compares kvscope's replay with the independent numpy references of this folder.

    run_reference.py KVSCOPE TRACE.h5 [OUTDIR]

For each case below: `kvscope replay TRACE --policy SPEC --mode MODE --out R.h5`, then the held
set of every replayed layer and KV head at every checked step is rebuilt from R.h5's evicted_at
(token j is held at step t when j <= t and it was not evicted at or before t) and, for the
policies that set widths, the width of each held token from bit_events (the last event at or
before t; 16 without one); for kmeans (merged entries), also the centroid each folded token went
into (merged_into). The reference's held sets / widths must be equal at every checked
step, layer and KV head. Exit 0 when all are equal, 1 otherwise (the first differences printed).
KVS_REF_ONLY=NAME runs only the cases of policy NAME.
"""
import os
import subprocess
import sys
import tempfile

try:
    import h5py
    import numpy as np
except ImportError as e:  # CTest reports 77 as skipped
    print("KVS_SKIPPED: reference_policies: %s" % e)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from adakv import AdaKV  # noqa: E402
from agacc import AGACC, AGACCGlobal  # noqa: E402
from agd import AGD  # noqa: E402
from common import Trace, run  # noqa: E402
from composite import Composite  # noqa: E402
from dynamickv import DynamicKV  # noqa: E402
from expattn import ExpAttn  # noqa: E402
from h2o import H2O  # noqa: E402
from keydiff import KeyDiff  # noqa: E402
from kmeans import KMeans, run_merging  # noqa: E402
from knorm import Knorm  # noqa: E402
from pyramidkv import PyramidKV  # noqa: E402
from quant import KIVI  # noqa: E402
from razor import Razor  # noqa: E402
from snapkv import SnapKV  # noqa: E402
from tova import TOVA  # noqa: E402
from uncomp import UNComp  # noqa: E402
from window import Window  # noqa: E402
import zack  # noqa: E402

# (spec, mode, reference factory(trace), steps: "all" or "P" (the prefill step and the last),
#  compare widths)
CASES = [
    ("window:budget=48", "stream", lambda tr: Window(48), "all", False),
    ("h2o:budget=48", "stream", lambda tr: H2O(48, tr.n_kv), "all", False),
    ("h2o:budget=33,recent=0", "stream", lambda tr: H2O(33, tr.n_kv, recent=0), "all", False),
    ("h2o:budget=0.3", "stream", lambda tr: H2O(0.3, tr.n_kv), "all", False),
    ("tova:budget=48", "stream", lambda tr: TOVA(48, tr.n_head), "all", False),
    ("tova:budget=64", "prefill", lambda tr: TOVA(64, tr.n_head), "all", False),
    ("snapkv:budget=64", "prefill", lambda tr: SnapKV(64, tr.n_kv), "all", False),
    ("snapkv:budget=80,window=16,kernel=7,pool=max", "prefill",
     lambda tr: SnapKV(80, tr.n_kv, window=16, kernel=7, kind="max"), "all", False),
    ("pyramidkv:budget=64,window=16", "prefill",
     lambda tr: PyramidKV(64, tr.n_kv, tr.layer, tr.n_layer, window=16), "all", False),
    ("adakv:budget=64", "prefill", lambda tr: AdaKV(64, tr.n_kv), "all", False),
    ("adakv:budget=0.3,window=16,alpha=0.5", "prefill",
     lambda tr: AdaKV(0.3, tr.n_kv, alpha=0.5, window=16), "all", False),
    ("dynamickv:budget=64", "prefill", lambda tr: DynamicKV(64, tr), "all", False),
    ("dynamickv:budget=48,ws=8,m=1,r_max=2", "prefill",
     lambda tr: DynamicKV(48, tr, ws=8, m=1, r_max=2), "all", False),
    ("dynamickv:budget=64,ws=32,kernel=5,r_max=2,alloc=capped", "prefill",
     lambda tr: DynamicKV(64, tr, ws=32, kernel=5, r_max=2, alloc="capped"), "all", False),
    ("composite:budget=64", "prefill", lambda tr: Composite(64, tr), "all", False),
    ("composite:budget=48,window=16,agg=max,norm=layer,min_ratio=0,max_ratio=3", "prefill",
     lambda tr: Composite(48, tr, window=16, agg="max", norm="layer", min_ratio=0, max_ratio=3),
     "all", False),
    ("knorm:budget=64", "prefill", lambda tr: Knorm(64, tr, "prefill"), "all", False),
    ("knorm:budget=48", "stream", lambda tr: Knorm(48, tr, "stream"), "all", False),
    ("keydiff:budget=64", "prefill", lambda tr: KeyDiff(64, tr, "prefill"), "all", False),
    ("keydiff:budget=0.3", "stream", lambda tr: KeyDiff(0.3, tr, "stream"), "all", False),
    # CaM evicts as its base policy does (what it merges, values, is not in the results file:
    # tests/simulator/test_cam.cpp checks it by hand).
    ("cam:budget=48", "stream", lambda tr: Window(48), "all", False),
    ("cam:budget=48,base=h2o", "stream", lambda tr: H2O(48, tr.n_kv), "all", False),
    ("expattn:budget=64", "prefill", lambda tr: ExpAttn(64, tr), "all", False),
    ("expattn:budget=0.3,n_sink=2,n_future_positions=64,use_covariance=0", "prefill",
     lambda tr: ExpAttn(0.3, tr, n_future=64, n_sink=2, use_cov=False), "all", False),
    ("uncomp:budget=64", "prefill", lambda tr: UNComp(64, tr), "all", False),
    ("uncomp:budget=48,window=16,kernel=5,pool=avg,svdn=8,source=k,alloc=equal", "prefill",
     lambda tr: UNComp(48, tr, window=16, kernel=5, kind="avg", svdn=8, source="k",
                       alloc="equal"), "all", False),
    ("agacc", "prefill", lambda tr: AGACC(tr.n_kv), "P", True),
    ("agacc:scope=global", "prefill", lambda tr: AGACCGlobal(tr.path, tr.n_kv), "P", True),
    ("razor:budget=48", "prefill", lambda tr: Razor(48, tr, 192), "all", False),
    ("razor:budget=32,sinks=2,induction=0.34,echo=0.17,compensate=0", "prefill",
     lambda tr: Razor(32, tr, 192, sinks=2, induction=0.34, echo=0.17, compensate=False), "all",
     False),
    ("agd:budget=48,b_min=16", "stream", lambda tr: AGD(48, tr.n_kv, b_min=16), "all", False),
    ("agd:budget=64,k=8", "prefill", lambda tr: AGD(64, tr.n_kv, k=8), "P", True),
    ("agd", "prefill", lambda tr: AGD(None, tr.n_kv), "P", True),
    ("quant:bits=4,group=32,residual=64", "stream",
     lambda tr: KIVI(tr.n_kv, bits=4, group=32, residual=64), "all", True),
    ("kmeans:max_cache_size=48,num_clusters=16,pruning_interval=32,lookback_window=16",
     "stream", lambda tr: KMeans(tr, 48, 16, 32, 16), "all", False),
    ("kmeans:max_cache_size=64,num_clusters=24,pruning_interval=16,lookback_window=32",
     "prefill", lambda tr: KMeans(tr, 64, 24, 16, 32), "all", False),
    ("kmeans:max_cache_size=32,num_clusters=8,pruning_interval=24,lookback_window=8,"
     "kmeans_learning_rate=0.25", "stream", lambda tr: KMeans(tr, 32, 8, 24, 8, eta=0.25),
     "all", False),
]


def kvscope_sets(g, T, steps, unit):
    ev = g["evicted_at"][...]  # [L, Hkv, T]
    L, H, _ = ev.shape
    e = ev[unit // H, unit % H]
    be = g["bit_events"][...] if "bit_events" in g else np.zeros((0, 4), np.int32)
    be = be[be[:, 0] == unit]
    out = {}
    for t in steps:
        held = [j for j in range(t + 1) if e[j] < 0 or e[j] > t]
        w = {}
        for j in held:
            ev_j = be[(be[:, 1] == j) & (be[:, 2] <= t)]
            w[j] = int(ev_j[-1, 3]) if len(ev_j) else 16
        out[t] = (held, w)
    return out


def main():
    kvs, trace = sys.argv[1], sys.argv[2]
    outdir = sys.argv[3] if len(sys.argv) > 3 else tempfile.mkdtemp(prefix="kvs_ref_")
    os.makedirs(outdir, exist_ok=True)
    failures, checked, ran = 0, 0, 0
    only = os.environ.get("KVS_REF_ONLY", "")  # a policy name: run only its cases
    for i, (spec, mode, make, which, widths) in enumerate(CASES):
        if only and not spec.startswith(only):
            continue
        ran += 1
        out = os.path.join(outdir, "ref_%02d.h5" % i)
        subprocess.run([kvs, "replay", trace, "--policy", spec, "--mode", mode, "--out", out,
                        "--threads", "1", "-q"], check=True, stdout=subprocess.DEVNULL)
        with h5py.File(out, "r") as r:
            g = r["runs/0000"]
            P = int(g.attrs["prefill_len"])
            T = int(r["runs/0000/evicted_at"].shape[2])
            rl = [int(x) for x in g["layers"][...]]
            first = P if mode == "prefill" else 0
            steps = list(range(first, T)) if which == "all" else [P]
            bad = 0
            for slot, layer in enumerate(rl):
                tr = Trace(trace, layer)
                ref = make(tr)
                merges = isinstance(ref, KMeans)
                ref_sets, ref_w = (run_merging if merges else run)(ref, tr, first, set(steps))
                for kv in range(tr.n_kv):
                    if merges:
                        # The centroid each folded token went into, at the end of the run.
                        mi = g["merged_into"][slot, kv]
                        got_m = {j: int(mi[j]) for j in range(T) if mi[j] >= 0}
                        checked += 1
                        if got_m != ref.merged_into[kv] or not got_m:
                            bad += 1
                            diff = sorted(set(got_m.items()) ^ set(ref.merged_into[kv].items()))
                            print("  %s (%s): layer %d kv %d: merged_into differs (%d folded by "
                                  "kvscope, %d by the reference) %s" % (
                                      spec, mode, layer, kv, len(got_m),
                                      len(ref.merged_into[kv]), diff[:6]))
                    got = kvscope_sets(g, T, steps, slot * tr.n_kv + kv)
                    for t in steps:
                        checked += 1
                        held, w = got[t]
                        if held != ref_sets[t][kv]:
                            bad += 1
                            if bad <= 3:
                                a, b = set(held), set(ref_sets[t][kv])
                                print("  %s (%s): layer %d kv %d step %d: kvscope-only %s, "
                                      "reference-only %s" % (spec, mode, layer, kv, t,
                                                             sorted(a - b)[:8], sorted(b - a)[:8]))
                        elif widths and w != ref_w[t][kv]:
                            bad += 1
                            if bad <= 3:
                                d = [(j, w[j], ref_w[t][kv].get(j)) for j in held
                                     if w[j] != ref_w[t][kv].get(j)]
                                print("  %s (%s): layer %d kv %d step %d: widths (token, "
                                      "kvscope, reference) %s" % (spec, mode, layer, kv, t, d[:8]))
        status = "equal" if bad == 0 else "%d differences" % bad
        print("%-45s %-7s %4d steps x %d layers x %d KV heads: %s" % (
            spec, mode, len(steps), len(rl), tr.n_kv, status))
        failures += bad > 0
    # zack evicts nothing: its bytes (the ranks it chose) and output errors are compared.
    for i, (spec, energy, rank) in enumerate((("zack", 0.99, 0), ("zack:energy=0.8", 0.8, 0),
                                               ("zack:rank=5", 0.99, 5))):
        if only and not spec.startswith(only):
            continue
        ran += 1
        out = os.path.join(outdir, "ref_zack_%d.h5" % i)
        subprocess.run([kvs, "replay", trace, "--policy", spec, "--mode", "prefill", "--out",
                        out, "--threads", "1", "-q"], check=True, stdout=subprocess.DEVNULL)
        n, diffs = zack.check(out, trace, energy, rank)
        checked += n
        for d in diffs[:3]:
            print("  %s (prefill): %s" % (spec, d))
        print("%-45s %-7s %d (step, layer, KV head) bytes and output errors: %s" % (
            spec, "prefill", n, "equal" if not diffs else "%d differences" % len(diffs)))
        failures += bool(diffs)
    print("%d (step, layer, KV head) held sets compared; %d of %d cases differ" % (
        checked, failures, ran))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
