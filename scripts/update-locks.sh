#!/usr/bin/env bash
# Refresh locks/ in one command: re-resolve both locks from pyproject.toml and
# export/pyproject.toml with pip-tools, install the new test lock into a throwaway virtual
# environment, check that PyPI has the edge lock's aarch64 wheels, run the default tests there,
# and replace locks/ only if all of that passed. Prints what moved.
#
# Usage:  scripts/update-locks.sh                      # newest versions the pyproject ranges allow
#         scripts/update-locks.sh -P numpy -P pytest   # move only these (pip-compile -P), keep the rest
#         LOCKS_SKIP_TESTS=1 scripts/update-locks.sh   # re-resolve only (the header then says so)
# Needs:  CPython 3.11 on Linux x86_64 (the locks' platform), network to PyPI, Fashion-MNIST
#         (dataset-fashion-mnist) for the tests. Takes ~3 min plus the default test run.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
"$PY" -c 'import sys, platform; sys.exit(sys.version_info[:2] != (3, 11) or platform.machine() != "x86_64")' \
  || { echo "update-locks: the locks are for CPython 3.11 on Linux x86_64; run with such a python (PYTHON=...)" >&2; exit 2; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$PY" -m venv "$WORK/venv"
V="$WORK/venv/bin/python"
"$V" -m pip install -q --disable-pip-version-check "pip-tools>=7.7,<8"
TOOL="pip-tools $("$V" -c "from importlib.metadata import version as v; print(v('pip-tools'))")"

upgrade=(--upgrade)
if [ "$#" -gt 0 ]; then  # move only the packages named: start from today's pins
  upgrade=("$@")
  cp locks/test-cp311-linux-x86_64.txt "$WORK/test.raw"
  cp locks/edge-cp311-linux.txt "$WORK/edge.raw"
fi
echo "update-locks: resolving (${upgrade[*]})" >&2
"$V" -m piptools compile -q --strip-extras --no-header --no-emit-index-url --no-emit-find-links "${upgrade[@]}" \
  -o "$WORK/test.raw" locks/test.in
"$V" scripts/locks.py finalize test "$WORK/test.raw" "$WORK/test.txt" --tool "$TOOL"
# The device's lock: export/'s dependencies at the test lock's versions, so the x86 tests run
# exactly what a Pi installs.
"$V" -m piptools compile -q --strip-extras --no-header --no-emit-index-url --no-emit-find-links "${upgrade[@]}" \
  -c "$WORK/test.txt" -o "$WORK/edge.raw" export/pyproject.toml
"$V" scripts/locks.py finalize edge "$WORK/edge.raw" "$WORK/edge.txt" --tool "$TOOL"

echo "update-locks: checking the edge lock's aarch64 wheels (Bookworm: glibc 2.36, cp311)" >&2
plat=(--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 --platform manylinux2014_aarch64)
for g in $(seq 17 36); do plat+=(--platform "manylinux_2_${g}_aarch64"); done
grep -v '^#' "$WORK/edge.txt" | sed 's/ *#.*//' | grep . > "$WORK/edge.pins"
"$V" -m pip download -q --disable-pip-version-check --no-deps "${plat[@]}" -d "$WORK/aarch64" \
  -r "$WORK/edge.pins"

echo "update-locks: installing the new test lock into a fresh venv" >&2
"$V" -m pip install -q --disable-pip-version-check -c "$WORK/test.txt" -e ./export -e ".[test,ray]"
if [ -z "${LOCKS_SKIP_TESTS:-}" ]; then
  echo "update-locks: running the default tests against the new versions" >&2
  # The tests read locks/ too (tests/test_locks.py): the new locks are in place while they run,
  # and the old ones come back if anything fails.
  cp locks/test-cp311-linux-x86_64.txt "$WORK/test.old"
  cp locks/edge-cp311-linux.txt "$WORK/edge.old"
  cp "$WORK/test.txt" locks/test-cp311-linux-x86_64.txt
  cp "$WORK/edge.txt" locks/edge-cp311-linux.txt
  if ! "$V" -m pytest -q; then
    cp "$WORK/test.old" locks/test-cp311-linux-x86_64.txt
    cp "$WORK/edge.old" locks/edge-cp311-linux.txt
    echo "update-locks: the tests failed with the new versions; locks/ left as it was" >&2
    "$V" scripts/locks.py diff locks/test-cp311-linux-x86_64.txt "$WORK/test.txt" >&2
    exit 1
  fi
  cp "$WORK/test.old" locks/test-cp311-linux-x86_64.txt  # for the diff below
  cp "$WORK/edge.old" locks/edge-cp311-linux.txt
else
  sed -i 's/; the default tests passed with these versions\./; NOT tested (LOCKS_SKIP_TESTS)./' \
    "$WORK/test.txt" "$WORK/edge.txt"
fi
echo "update-locks: what moved (test lock):"
"$V" scripts/locks.py diff locks/test-cp311-linux-x86_64.txt "$WORK/test.txt"
echo "update-locks: what moved (edge lock):"
"$V" scripts/locks.py diff locks/edge-cp311-linux.txt "$WORK/edge.txt"
cp "$WORK/test.txt" locks/test-cp311-linux-x86_64.txt
cp "$WORK/edge.txt" locks/edge-cp311-linux.txt
echo "update-locks: locks/ written; reinstall here with the README's command 1"
