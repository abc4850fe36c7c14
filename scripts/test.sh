#!/usr/bin/env bash
# Runs every test of kvscope on a fresh or already set-up machine:
#   release build: all tests (unit, real-model, CLI);
#   ASan + UBSan build: the unit tests ([cpu]), which include the hostile-file parsers and the
#   viewer's data model.
# Exits non-zero on any failure. Ends with a summary: passed / failed / skipped per build, and the
# reason of every skipped test (see docs/testing.md).
set -euo pipefail
# OpenMP threads (replay, capture's writer) sleep instead of spinning while they wait: ctest
# runs tests side by side. The forward pass does not use OpenMP regions (engine/parallel.h: its
# own pool spins briefly, then sleeps), so this costs the model tests nothing.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
cd "$(dirname "$0")/.."
KVS_TEST_PKGS=1 scripts/setup.sh release asan
if command -v clang-format >/dev/null && [ -e .git ]; then
  echo "== clang-format check" >&2
  git ls-files -z '*.cpp' '*.h' '*.cu' '*.cuh' | xargs -0 -r clang-format --dry-run -Werror
fi
# Each run writes a JUnit file; the summary at the end says how many tests were skipped and why
# (no model, no GPU, no h5py, no Xvfb: tests/kvs_skip.h), also when a run failed.
JR=$PWD/build/release/ctest-junit.xml JA=$PWD/build/asan/ctest-junit.xml
rm -f "$JR" "$JA"
summary() { echo "== summary" >&2; python3 scripts/test_summary.py "release=$JR" "asan+ubsan (-L cpu)=$JA" >&2; }
echo "== release: all tests" >&2
rc=0
ctest --preset release -j "$(nproc)" --timeout 1200 --output-junit "$JR" || rc=$?
if [ $rc -ne 0 ]; then summary; exit $rc; fi
echo "== asan+ubsan: unit tests" >&2
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --preset asan -L cpu -j "$(nproc)" --timeout 1200 --output-junit "$JA" || rc=$?
summary
exit $rc
