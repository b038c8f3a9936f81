#!/usr/bin/env bash
# Issue 7 end to end: films, stemkit (LatticeFit, CCSTAE), py4DSTEM StrainMap, auto4dstem, one table.
# Usage: bash benchmarks/strain/run.sh      (SIDE=64 scan side; THREADS="1 2" torch threads; REMAKE=1 redoes the films;
#        A4D_FILMS="bg70 bg00" the films auto4dstem runs on, default bg70: ~52 CPU-minutes each (3,109 s on bg70); A4D_FILMS=none skips it)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
HERE=benchmarks/strain
PY4D=.peers/py4dstem/bin/python
A4D=.peers/auto4dstem/bin/python
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
if [ "${A4D_FILMS:-bg70}" = none ]; then
    echo "auto4dstem skipped (A4D_FILMS=none)"
elif [ -x "$A4D" ]; then
    for film in ${A4D_FILMS:-bg70}; do
        OMP_NUM_THREADS=1 nice -n 10 "$A4D" "$HERE/run_auto4dstem.py" --fresh "$HERE/data/film_$film.npz"
    done
else
    echo "auto4dstem venv missing: bash benchmarks/strain/setup_auto4dstem.sh (see PEERS.md)"
fi
echo "after: $(uptime)" | tee -a "$HERE/results/load.txt"
.venv/bin/python "$HERE/compare.py" | tee "$HERE/results/table.md"
