#!/usr/bin/env bash
# Issue 4 end to end: py4DSTEM venv, data, tuning, both finders timed, side-by-side tables.
# Usage: bash benchmarks/find_peaks/run.sh        (RETUNE=1 / REMAKE=1 to redo)
# Timing (timing.py, the same rule for stemkit and py4DSTEM): REPEAT measurements (default 3) per
# variant and data file, each repeating whole runs for at least MIN_TIME seconds (default 2); the
# figure is the best measurement's mean time per run. Run it on a quiet machine: load.txt records
# the load averages before and after the timing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
HERE=benchmarks/find_peaks
PY4D=.peers/py4dstem/bin/python
REPEAT="${REPEAT:-3}"
MIN_TIME="${MIN_TIME:-2}"
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
    .venv/bin/python "$HERE/run_stemkit.py" --threads "$threads" --repeat "$REPEAT" --min-time "$MIN_TIME"
done
for subpixel in poly multicorr; do
    for workers in 1 2; do
        OPENBLAS_NUM_THREADS=1 "$PY4D" "$HERE/run_py4dstem.py" --subpixel "$subpixel" --workers "$workers" --repeat "$REPEAT" --min-time "$MIN_TIME"
        env -u OPENBLAS_NUM_THREADS "$PY4D" "$HERE/run_py4dstem.py" --subpixel "$subpixel" --workers "$workers" --repeat "$REPEAT" --min-time "$MIN_TIME"
    done
    # the speed-up target is against poly: the load over stemkit's and poly's timing, before the long multicorr runs
    if [ "$subpixel" = poly ]; then
        echo "after stemkit and py4DSTEM poly: $(uptime)" | tee -a "$HERE/results/load.txt"
    fi
done
echo "after timing: $(uptime)" | tee -a "$HERE/results/load.txt"
OPENBLAS_NUM_THREADS=1 "$PY4D" "$HERE/run_py4dstem.py" --subpixel poly --oracle --repeat 1 --min-time 0  # accuracy only
(cd "$HERE" && "$ROOT/.venv/bin/python" compare.py) | tee "$HERE/results/tables.md"
