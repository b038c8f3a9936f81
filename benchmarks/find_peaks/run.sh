#!/usr/bin/env bash
# Issue 4 end to end: py4DSTEM venv, data, tuning, both finders timed, side-by-side tables.
# Usage: bash benchmarks/find_peaks/run.sh        (REPEAT=3 timed runs each; RETUNE=1 / REMAKE=1 to redo)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
HERE=benchmarks/find_peaks
PY4D=.peers/py4dstem/bin/python
REPEAT="${REPEAT:-3}"
mkdir -p "$HERE/results"

bash "$HERE/setup_py4dstem.sh"
if [ "${REMAKE:-0}" = 1 ] || [ "$(ls "$HERE"/data/*_dose*.npz 2>/dev/null | wc -l)" -lt 8 ]; then
    .venv/bin/python "$HERE/make_data.py"
fi
if [ "${RETUNE:-0}" = 1 ] || [ ! -f "$HERE/results/py4dstem_params.json" ]; then
    OPENBLAS_NUM_THREADS=1 "$PY4D" "$HERE/tune_py4dstem.py" --oracle | tee "$HERE/results/tune.log"
fi

echo "before timing: $(uptime)" | tee "$HERE/results/load.txt"
for threads in 2 1; do
    .venv/bin/python "$HERE/run_stemkit.py" --threads "$threads" --repeat "$REPEAT"
done
for subpixel in poly multicorr; do
    for workers in 1 2; do
        OPENBLAS_NUM_THREADS=1 "$PY4D" "$HERE/run_py4dstem.py" --subpixel "$subpixel" --workers "$workers" --repeat "$REPEAT"
        env -u OPENBLAS_NUM_THREADS "$PY4D" "$HERE/run_py4dstem.py" --subpixel "$subpixel" --workers "$workers" --repeat "$REPEAT"
    done
done
echo "after timing: $(uptime)" | tee -a "$HERE/results/load.txt"
OPENBLAS_NUM_THREADS=1 "$PY4D" "$HERE/run_py4dstem.py" --subpixel poly --oracle --repeat 1
(cd "$HERE" && "$ROOT/.venv/bin/python" compare.py) | tee "$HERE/results/tables.md"
