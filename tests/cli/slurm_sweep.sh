#!/usr/bin/env bash
# A sweep on a real single-node Slurm: starts munged, slurmctld and slurmd on 127.0.0.1 (own
# key, ports, state and logs in a temporary folder), submits a 4-shard sweep with
# scripts/slurm/submit_sweep.sh (a job array running `kvscope sweep --shard auto`, then a merge
# job after it), waits, and checks that the merged results equal the unsharded sweep, run by
# run and array by array. Stops the daemons it started (by pid) and removes the folder.
# Usage: slurm_sweep.sh KVSCOPE MODEL FIXTURES PYTHON
# Exit 77 (skipped) without Slurm / munge (Debian: slurmctld slurmd slurm-client munge) or root.
set -euo pipefail
KVS=$1 MODEL=$2 FIX=$3 PY=$4
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
for c in munged slurmctld slurmd sbatch squeue sinfo; do
  command -v "$c" >/dev/null || [ -x "/usr/sbin/$c" ] ||
    { echo "skipped: $c not installed (Debian: slurmctld slurmd slurm-client munge)"; exit 77; }
done
[ "$(id -u)" -eq 0 ] || { echo "skipped: slurmd must run as root"; exit 77; }
PATH=$PATH:/usr/sbin

D=$(mktemp -d /tmp/kvs_slurm.XXXXXX)
chmod 755 "$D"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$D"
}
trap cleanup EXIT
fails=0
check() {  # check CONDITION-STATUS MESSAGE
  if [ "$1" -eq 0 ]; then echo "ok   $2"; else echo "FAIL $2"; fails=$((fails + 1)); fi
}
logs() { for f in "$D"/*.log "$D"/*.out "$D"/out/*.shards/logs/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -20 "$f"; }; done; }

# --- a trace and the unsharded sweep ---------------------------------------------------------
mkdir -p "$D/out"
"$KVS" capture -m "$MODEL" --text-file "$FIX/alice_ch1.txt" --ctx 160 --layers 0,29 \
  --out "$D/t.h5" -q
SWEEP=("$D/t.h5" --policy full --policy h2o --policy window --policy quant:bits=2
       --budgets 32,64 --checkpoints 2)
"$KVS" sweep "${SWEEP[@]}" -q --out "$D/all.h5" --csv "$D/all.csv" >/dev/null

# Outside a job array, --shard auto says why it cannot run (one line, non-zero, no output).
set +e
err=$(env -u SLURM_ARRAY_TASK_ID "$KVS" sweep "${SWEEP[@]}" -q --shard auto --out "$D/x.h5" 2>&1)
rc=$?
set -e
[ $rc -ne 0 ] && [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] && [ ! -e "$D/x.h5" ] &&
  [[ "$err" == *"SLURM_ARRAY_TASK_ID is not set"* ]]
check $? "--shard auto outside a job array: $err"

# --- a single-node Slurm on loopback ----------------------------------------------------------
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
P1=$(free_port) P2=$(free_port)
while [ "$P2" = "$P1" ]; do P2=$(free_port); done
HOST=$(hostname -s)
dd if=/dev/urandom of="$D/munge.key" bs=1024 count=1 2>/dev/null
chmod 400 "$D/munge.key"
mkdir -p "$D/state" "$D/spool"
munged --foreground --force --key-file="$D/munge.key" --socket="$D/munge.sock" \
  --pid-file="$D/munged.pid" --log-file="$D/munged.log" --seed-file="$D/munged.seed" \
  >"$D/munged.out" 2>&1 &
pids+=($!)
cat >"$D/slurm.conf" <<EOF
ClusterName=kvstest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$P1
SlurmdPort=$P2
AuthType=auth/munge
AuthInfo=socket=$D/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/slurmctld.log
SlurmdLogFile=$D/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=kvstest Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$D/slurm.conf
for _ in $(seq 50); do [ -S "$D/munge.sock" ] && break; sleep 0.1; done
slurmctld -D -i -f "$SLURM_CONF" >"$D/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -N "$HOST" -f "$SLURM_CONF" >"$D/slurmd.out" 2>&1 &
pids+=($!)
up=1
for _ in $(seq 100); do
  if sinfo -h -o %t 2>/dev/null | grep -qx idle; then up=0; break; fi
  sleep 0.2
done
if [ $up -ne 0 ]; then
  echo "FAIL single-node Slurm did not come up in 20 s"
  logs
  exit 1
fi
echo "ok   single-node Slurm up (slurmctld :$P1, slurmd :$P2 on 127.0.0.1)"

# --- the sweep as a 4-task job array + a dependent merge ---------------------------------------
set +e
KVSCOPE=$KVS timeout 300 "$ROOT/scripts/slurm/submit_sweep.sh" -n 4 -o "$D/out/merged.h5" \
  --csv "$D/out/merged.csv" --wait -- "${SWEEP[@]}"
rc=$?
set -e
check $rc "submit_sweep.sh -n 4 --wait: the array and the merge job succeeded"
[ $rc -eq 0 ] || { logs; exit 1; }
n_shards=$(ls "$D/out/merged.shards"/shard_*.h5 | wc -l)
[ "$n_shards" -eq 4 ]
check $? "4 shard files ($n_shards)"

# Same runs, same numbers: every array of every run, the summaries (seconds aside).
PYTHONPATH="$ROOT/python" "$PY" - "$D/all.h5" "$D/out/merged.h5" "$D/out/merged.shards" \
  "$D/all.csv" "$D/out/merged.csv" <<'PY'
import csv, glob, sys
import numpy as np
import kvscope
whole, merged, shards = sys.argv[1:4]
a, m = kvscope.open_results(whole), kvscope.open_results(merged)
fails = 0
def check(ok, what):
    global fails
    print(("ok   " if ok else "FAIL ") + what)
    fails += 0 if ok else 1
check(len(a) == 6 and len(m) == 6, f"6 runs in the unsharded sweep ({len(a)}) and merged ({len(m)})")
per_shard = [len(kvscope.open_results(p)) for p in sorted(glob.glob(shards + "/shard_*.h5"))]
check(per_shard == [2, 2, 1, 1], f"runs per shard (index % 4): {per_shard}")
by_spec = {r.spec: r for r in a}
check(sorted(by_spec) == sorted(r.spec for r in m), "the same specs")
worst = []
for r in m:
    w = by_spec.get(r.spec)
    if w is None:
        continue
    for name in ("steps", "layers", "recall", "out_rel_err", "held", "bytes", "evicted_at",
                 "ckpt_bits", "bit_events"):
        x, y = getattr(w, name), getattr(r, name)
        if x.shape != y.shape or not np.array_equal(x, y):
            worst.append(f"{r.spec} {name}")
    for k, v in w.summary.items():
        if not (v == r.summary[k] or (np.isnan(v) and np.isnan(r.summary[k]))):
            worst.append(f"{r.spec} {k}")
check(not worst, "every array and summary of every run equal" + (f": {worst[:3]}" if worst else ""))
def rows(path):
    return sorted(tuple(sorted((k, v) for k, v in row.items() if k != "seconds"))
                  for row in csv.DictReader(open(path)))
check(rows(sys.argv[4]) == rows(sys.argv[5]), "summary CSVs equal (the seconds column aside)")
sys.exit(1 if fails else 0)
PY
check $? "merged results == unsharded sweep"
echo "$fails failed"
[ $fails -eq 0 ]
