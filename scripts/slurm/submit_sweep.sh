#!/usr/bin/env bash
# Submits a kvscope sweep to Slurm: a job array of N shards (sweep.sbatch, `kvscope sweep
# --shard auto`), then a merge job (merge.sbatch) that runs once all of them succeeded.
#   scripts/slurm/submit_sweep.sh -n N -o OUT.h5 [--csv SUMMARY.csv] [--wait] [--sbatch "OPTS"] \
#       -- TRACE... --policy SPEC ... --budgets B,...
# Everything after `--` goes to `kvscope sweep`. Shards go to OUT.shards/ (logs in
# OUT.shards/logs/). sbatch options for both jobs (partition, time, -c ...): SBATCH_* variables
# (e.g. SBATCH_PARTITION, SBATCH_TIMELIMIT) or --sbatch "OPTS". kvscope: $KVSCOPE, else this
# checkout's build/release/cli/kvscope. --wait blocks until the merge is done (exit status of
# the merge; non-zero when a shard failed).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
usage() {
  echo "usage: $0 -n N -o OUT.h5 [--csv S.csv] [--wait] [--sbatch 'OPTS'] -- TRACE... --policy SPEC ..." >&2
  exit 2
}
n="" out="" csv="" wait=() extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    -n) n=${2:-}; shift 2 ;;
    -o) out=${2:-}; shift 2 ;;
    --csv) csv=${2:-}; shift 2 ;;
    --wait) wait=(--wait); shift ;;
    --sbatch) read -r -a extra <<<"${2:-}"; shift 2 ;;
    --) shift; break ;;
    *) usage ;;
  esac
done
[[ "$n" =~ ^[1-9][0-9]*$ ]] && [ -n "$out" ] && [ $# -ge 2 ] || usage
command -v sbatch >/dev/null || { echo "error: sbatch not found (Slurm's client commands)" >&2; exit 1; }
export KVSCOPE=${KVSCOPE:-$(cd "$here/../.." && pwd)/build/release/cli/kvscope}
dir="${out%.h5}.shards"
rm -rf "$dir"
mkdir -p "$dir/logs"
array=$(sbatch --parsable "${extra[@]}" --array="0-$((n - 1))" --output="$dir/logs/sweep_%a.log" \
  "$here/sweep.sbatch" "$dir" "$@")
array=${array%%;*}
echo "submitted: sweep job array $array ($n shards) -> $dir" >&2
[ ${#wait[@]} -eq 0 ] || echo "waiting for the merge job (after $array) -> $out" >&2
if ! merge=$(sbatch --parsable "${extra[@]}" "${wait[@]}" --dependency="afterok:$array" \
  --kill-on-invalid-dep=yes --output="$dir/logs/merge.log" \
  "$here/merge.sbatch" "$dir" "$n" "$out" "$csv"); then
  echo "error: the merge job failed or was cancelled (did a shard fail? see $dir/logs/)" >&2
  exit 1
fi
echo "merge job ${merge%%;*} (after $array) -> $out${wait:+: done}" >&2
