#!/usr/bin/env bash
# Issue 10, out of core: a cube 4x the memory budget written to zarr, then virtual images and orientation
# mapping over it, each stage's peak resident memory against the budget.
# Usage: bash benchmarks/scale/run.sh      (BUDGET_GIB=1 TIMES=4 THREADS=2; KEEP_CUBE=1 reuses a written cube)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
echo "before: $(uptime)"
.venv/bin/python benchmarks/scale/out_of_core.py --budget-gib "${BUDGET_GIB:-1}" --times "${TIMES:-4}" \
    --threads "${THREADS:-2}" --folder "${FOLDER:-/tmp/stemkit-out-of-core}" ${KEEP_CUBE:+--keep-cube}
echo "after: $(uptime)"
