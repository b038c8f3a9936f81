#!/usr/bin/env bash
# Issue 7 end to end: films, stemkit (LatticeFit, CCSTAE), py4DSTEM StrainMap, one table.
# Usage: bash benchmarks/strain/run.sh      (SIDE=64 scan side; THREADS="1 2" torch threads; REMAKE=1 redoes the films)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
HERE=benchmarks/strain
PY4D=.peers/py4dstem/bin/python
mkdir -p "$HERE/results"
if [ "${REMAKE:-0}" = 1 ] || [ "$(ls "$HERE"/data/film_bg*.npz 2>/dev/null | wc -l)" -lt 4 ]; then
    .venv/bin/python "$HERE/make_data.py" "${SIDE:-64}"
fi
echo "before: $(uptime)" | tee "$HERE/results/load.txt"
for threads in ${THREADS:-1}; do
    .venv/bin/python "$HERE/run_stemkit.py" --threads "$threads"
done
if [ -x "$PY4D" ]; then
    OPENBLAS_NUM_THREADS=1 MPLBACKEND=Agg "$PY4D" "$HERE/run_py4dstem.py"
else
    echo "py4DSTEM venv missing: python -m venv .peers/py4dstem && .peers/py4dstem/bin/pip install py4dstem (see PEERS.md)"
fi
echo "after: $(uptime)" | tee -a "$HERE/results/load.txt"
.venv/bin/python "$HERE/compare.py" | tee "$HERE/results/table.md"
