#!/usr/bin/env bash
# Runs every test of kvscope on a fresh or already set-up machine:
#   release build: all tests (unit, real-model, CLI);
#   ASan + UBSan build: the unit tests ([cpu]), which include the hostile-file parsers.
# Exits non-zero on any failure.
set -euo pipefail
# OpenMP threads sleep instead of spinning while they wait: ctest runs tests side by side.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
cd "$(dirname "$0")/.."
KVS_TEST_PKGS=1 scripts/setup.sh release asan
if command -v clang-format >/dev/null && [ -d .git ]; then
  echo "== clang-format check" >&2
  git ls-files -z '*.cpp' '*.h' '*.cu' '*.cuh' | xargs -0 -r clang-format --dry-run -Werror
fi
echo "== release: all tests" >&2
ctest --preset release -j "$(nproc)" --timeout 1200
echo "== asan+ubsan: unit tests" >&2
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --preset asan -L cpu -j "$(nproc)" --timeout 1200
