#!/usr/bin/env bash
# Bragg-peak finding, stemkit vs py4DSTEM 0.14.18, on the same rendered patterns (issue 4).
# One command: set up py4DSTEM's own venv, render the data, tune py4DSTEM's threshold once
# (on the 2e5 dose of each family, against the ground truth), run both, print the tables.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash benchmarks/find_peaks/setup_py4dstem.sh
.venv/bin/python benchmarks/find_peaks/make_data.py
PEER=.peers/py4dstem/bin/python
[ -f benchmarks/find_peaks/results/py4dstem_params.json ] || OPENBLAS_NUM_THREADS=1 $PEER benchmarks/find_peaks/tune_py4dstem.py
.venv/bin/python benchmarks/find_peaks/run_stemkit.py
$PEER benchmarks/find_peaks/run_py4dstem.py --subpixel poly
OPENBLAS_NUM_THREADS=1 $PEER benchmarks/find_peaks/run_py4dstem.py --subpixel poly --workers 2 --repeat 2
OPENBLAS_NUM_THREADS=1 $PEER benchmarks/find_peaks/run_py4dstem.py --subpixel multicorr --repeat 1
.venv/bin/python benchmarks/find_peaks/compare.py
