#!/usr/bin/env bash
# The orientation model on a multislice (abTEM) test set, before and after Bloch-wave training (issue 11).
#
# 1. .peers/abtem (git-ignored; abTEM 1.0.11 never enters stemkit's .venv), made if missing;
# 2. cases.py (stemkit): N random orientations (uniform over SO(3)), half Cu half Cu2O, 15-40 nm, 300 keV,
#    plus two convention-check cases, to data/cases.json (git-ignored);
# 3. abtem_side.py (abTEM's venv, no stemkit): a plane-wave multislice through a rotated block of crystal per
#    case, spot lists to data/spots/NAME.npz; resumable: cases already written are skipped;
# 4. with CHECKS=1 (default): the two check cases and two scored cases again with a larger block (76.8 Å) and
#    thinner slices (1 Å), and those and the first FINE_N scored cases at half the pixel (0.05 Å) (data/spots-TAG/);
#    checks.py (stemkit) compares positions with stemkit's kinematic simulator, intensities with its Bloch waves
#    for R and C2z·R, and the settings with each other;
# 5. score.py (stemkit): the "before" weights (the first cu-cu2o, kinematic training only, SHA-256 5b2c6cf1…,
#    taken from the commit that shipped them into .runs/weights-before) and the shipped cu-cu2o ("after") on the
#    multislice, Bloch-wave and kinematic renderings of the same cases; with CHECKS=1 also on the FINE_N cases
#    simulated at both samplings, each way (results_subset_*.json).
#
# stemkit's side runs on a snapshot of the committed package (git archive HEAD stemkit, on PYTHONPATH), so work
# in progress in the tree does not enter the figures.
#
# Usage (from anywhere): bash benchmarks/orientation/multislice/run.sh
#   N=200   scored cases (even)   CHECKS=0   skip step 4   FINE_N=40   scored cases in the sampling check
# Printed: checks.txt, results.txt (noise seed 11), results_seeds.txt (seeds 12, 13), results_sampling.txt;
# numbers: checks.json, results*.json (all in this folder).
# Everything runs under nice, one thread per process (the dev machine's 2 cores are shared).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${HERE}/../../.." && pwd)"
cd "${ROOT}"
N="${N:-200}"
CHECKS="${CHECKS:-1}"
FINE_N="${FINE_N:-40}"
DATA="${HERE}/data"
FIRST_WEIGHTS_COMMIT=f455299  # "Ship cu-cu2o orientation weights": the kinematic-only weights
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

bash benchmarks/setup_peer.sh abtem abtem 1.0.11

SNAPSHOT="${ROOT}/.runs/multislice/stemkit-$(git rev-parse --short HEAD)"
if [ ! -d "${SNAPSHOT}/stemkit" ]; then
    mkdir -p "${SNAPSHOT}"
    git archive HEAD stemkit | tar -x -C "${SNAPSHOT}"
fi
export PYTHONPATH="${SNAPSHOT}"
STEMKIT=(nice -n 15 "${ROOT}/.venv/bin/python")
ABTEM=(nice -n 15 "${ROOT}/.peers/abtem/bin/python")

BEFORE="${ROOT}/.runs/weights-before"
mkdir -p "${BEFORE}"
for file in model.safetensors config.json; do
    git show "${FIRST_WEIGHTS_COMMIT}:stemkit/pretrained/cu-cu2o/${file}" > "${BEFORE}/${file}"
done
sha256sum "${BEFORE}/model.safetensors" | grep -q '^5b2c6cf1' || { echo "unexpected before-weights" >&2; exit 1; }

echo "== cases (stemkit) =="
"${STEMKIT[@]}" "${HERE}/cases.py" --n "${N}" --out "${DATA}"
echo "== abTEM multislice ($(date -u +%FT%TZ)) =="
"${ABTEM[@]}" "${HERE}/abtem_side.py" "${DATA}" 2>&1 | { grep --line-buffered -v -i "warning" || true; }
echo "== abTEM done ($(date -u +%FT%TZ)) =="

TAGS=()
if [ "${CHECKS}" = 1 ]; then
    CHECK_CASES=check-zone-axis,check-off-axis,case-0000,case-0003
    FINE_CASES="${CHECK_CASES},$(seq -f 'case-%04g' 0 $((FINE_N - 1)) | paste -sd,)"
    echo "== convergence runs: ${CHECK_CASES} (lateral block, slices); ${FINE_N} scored cases (sampling) =="
    "${ABTEM[@]}" "${HERE}/abtem_side.py" "${DATA}" --only "${CHECK_CASES}" --tag L77 --lateral 76.8 --gpts 768 \
        2>&1 | { grep --line-buffered -v -i "warning" || true; }
    "${ABTEM[@]}" "${HERE}/abtem_side.py" "${DATA}" --only "${CHECK_CASES}" --tag slice1 --slice 1.0 \
        2>&1 | { grep --line-buffered -v -i "warning" || true; }
    "${ABTEM[@]}" "${HERE}/abtem_side.py" "${DATA}" --only "${FINE_CASES}" --tag fine --gpts 1024 \
        2>&1 | { grep --line-buffered -v -i "warning" || true; }
    TAGS=(L77 slice1 fine)
fi
echo "== checks (stemkit) =="
"${STEMKIT[@]}" "${HERE}/checks.py" --data "${DATA}" --tags "${TAGS[@]}" | tee "${HERE}/checks.txt"
echo "== scores (stemkit) =="
{
    echo "load before: $(uptime)"
    "${STEMKIT[@]}" "${HERE}/score.py" "${BEFORE}" "${SNAPSHOT}/stemkit/pretrained/cu-cu2o" \
        --labels "before (first weights, kinematic only)" "after (shipped, Bloch fine-tuned)" --data "${DATA}"
    echo "load after: $(uptime)"
} 2>&1 | tee "${HERE}/results.txt"
echo "== the same scores with two other Poisson-noise seeds =="
for seed in 12 13; do
    "${STEMKIT[@]}" "${HERE}/score.py" "${BEFORE}" "${SNAPSHOT}/stemkit/pretrained/cu-cu2o" \
        --labels "before (first weights, kinematic only)" "after (shipped, Bloch fine-tuned)" --data "${DATA}" \
        --noise-seed "${seed}" --output "${HERE}/results_seed${seed}.json"
done 2>&1 | tee "${HERE}/results_seeds.txt"
if [ "${CHECKS}" = 1 ]; then
    echo "== the sampling check on the scores: the ${FINE_N} cases at 0.1 Å and at 0.05 Å =="
    {
        for tag in default fine; do
            "${STEMKIT[@]}" "${HERE}/score.py" "${BEFORE}" "${SNAPSHOT}/stemkit/pretrained/cu-cu2o" \
                --labels "before (first weights, kinematic only)" "after (shipped, Bloch fine-tuned)" --data "${DATA}" \
                --restrict-to fine $([ "${tag}" = fine ] && echo --tag fine) --output "${HERE}/results_subset_${tag}.json"
        done
    } 2>&1 | tee "${HERE}/results_sampling.txt"
fi
