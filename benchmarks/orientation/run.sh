#!/usr/bin/env bash
# Issue 5 end to end: data, stemkit, py4DSTEM ACOM and pyxem template matching, one table.
# Usage: bash benchmarks/orientation/run.sh [--quick]
#   --quick            16x16 scan (development); default 64x64 (4096 patterns)
#   WEIGHTS=PATH       stemkit weights folder or training checkpoint (default stemkit/pretrained/cu-cu2o)
#   THREADS=N          torch threads for stemkit (default 2; on a machine shared with other jobs 1 is far
#                      faster: 2 OpenMP threads that keep being descheduled wait on each other)
#   REMAKE=1           re-render the data; SKIP=py4dstem,pyxem  leave peers out (their last results stay)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
HERE=benchmarks/orientation
QUICK=""
if [ "${1:-}" = "--quick" ]; then QUICK="--quick"; fi
DATA="$HERE/data/$([ -n "$QUICK" ] && echo quick || echo full)"
SKIP="${SKIP:-}"
mkdir -p "$HERE/results"

if [ "${REMAKE:-0}" = 1 ] || [ ! -f "$DATA/cube.npy" ]; then
    .venv/bin/python "$HERE/make_data.py" $QUICK
fi

echo "before timing: $(uptime)" | tee "$HERE/results/load$QUICK.txt"
.venv/bin/python "$HERE/run_stemkit.py" $QUICK ${WEIGHTS:+--weights "$WEIGHTS"} --threads "${THREADS:-2}"
if [[ ",$SKIP," != *",py4dstem,"* ]]; then
    bash benchmarks/find_peaks/setup_py4dstem.sh
    OPENBLAS_NUM_THREADS=1 .peers/py4dstem/bin/python "$HERE/run_py4dstem.py" $QUICK --workers 2 --k-max 1.6
fi
if [[ ",$SKIP," != *",pyxem,"* ]]; then
    bash "$HERE/setup_pyxem.sh"
    .peers/pyxem/bin/python "$HERE/run_pyxem.py" $QUICK
fi
echo "after timing: $(uptime)" | tee -a "$HERE/results/load$QUICK.txt"
.venv/bin/python "$HERE/compare.py" $QUICK
