#!/usr/bin/env bash
# stemkit's Bloch-wave simulator against abTEM's multislice (issue 11).
#
# 1. creates .peers/abtem (git-ignored) with abTEM pinned, if missing: abTEM never enters
#    stemkit's .venv; the two exchange JSON/npz files under benchmarks/bloch/data (git-ignored);
# 2. cases.py (stemkit's venv) writes the cases: zone-axis supercells, rotations, reflections;
# 3. abtem_side.py (abTEM's venv) runs the static multislice of every case;
# 4. compare.py (stemkit's venv) runs simulate_bloch on the same cases, prints the tables and
#    writes benchmarks/bloch/results.json (and the printed tables to results.txt).
#
# Usage (from anywhere): bash benchmarks/bloch/run.sh [--quick]
#   --quick: skip the s_max series and the rate in compare.py.
# Takes ~15-30 min on the 2-core dev machine (abTEM ~10-20 min of it). Everything runs under nice.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${HERE}/../.." && pwd)"
VENV="${ROOT}/.peers/abtem"
ABTEM_VERSION="1.0.11"
DATA="${HERE}/data"

bash "${ROOT}/benchmarks/setup_peer.sh" abtem abtem "${ABTEM_VERSION}"

cd "${ROOT}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
echo "== cases (stemkit) =="
nice "${ROOT}/.venv/bin/python" "${HERE}/cases.py" "${DATA}"
echo "== abTEM multislice =="
OMP_NUM_THREADS=1 nice "${VENV}/bin/python" "${HERE}/abtem_side.py" "${DATA}" --check 2>&1 \
    | { grep -v -i "warning" || true; } | tee "${HERE}/abtem_log.txt"
echo "== comparison (stemkit) =="
{
    echo "load before: $(uptime)"
    nice "${ROOT}/.venv/bin/python" "${HERE}/compare.py" "${DATA}" "$@"
    echo "load after: $(uptime)"
} 2>&1 | tee "${HERE}/results.txt"
