#!/usr/bin/env bash
# auto4dstem 0.2.8 (Qin, Agar & Tran's CC-ST-AE reference code) in its own venv, .peers/auto4dstem (git-ignored),
# for the issue-7 strain benchmark (run_auto4dstem.py). Idempotent: does nothing when it already imports.
#
# Why not benchmarks/setup_peer.sh: auto4dstem's wheel declares pins that cannot be installed here or are not
# used by the code we call (torch==2.2.0, cupy-cuda12x, py4DSTEM 0.14.9, pymatgen, numba 0.58.1, scikit-image
# 0.19.3 which has no cp311 wheel and takes ~19 min to build), and it imports `m3util` without declaring it. So:
#   1. torch==2.13.0 from the local CPU wheel, through constraints.txt (the same pin as stemkit's Makefile):
#      pip never sees an unpinned torch, so it never pulls a CUDA build;
#   2. auto4dstem==0.2.8 with --no-deps;
#   3. by hand, current cp311 wheels of what its import chain and the training/transform path use: numpy,
#      scipy, scikit-image (skimage.filters/morphology), scikit-learn (sklearn.cluster.DBSCAN), opencv (cv2),
#      h5py, matplotlib, tqdm, requests. Recent versions were tried first and run its two-stage training and
#      transform (run_auto4dstem.py); the pinned old versions were not needed.
#   4. `m3util` is distributed on PyPI as m3learning-util; installed with --no-deps because it declares
#      tensorflow, globus-cli and datafed that auto4dstem never touches; its package __init__ imports need
#      wget, pygments, pandas (<2.3) and seaborn.
# Usage: bash benchmarks/strain/setup_auto4dstem.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${ROOT}/.peers/auto4dstem"
PIN=(-c "${ROOT}/constraints.txt")

installed() {
    "${VENV}/bin/python" - <<'PY'
import os
os.environ.setdefault("MPLBACKEND", "Agg")
from importlib.metadata import version
import torch
import auto4dstem  # noqa: F401  (imports m3util, skimage, sklearn, cv2, h5py through its package)
from auto4dstem.nn.Train_Function import TrainClass  # noqa: F401
assert torch.__version__.startswith("2.13.0"), torch.__version__
assert version("auto4dstem") == "0.2.8", version("auto4dstem")
print(f"auto4dstem {version('auto4dstem')}, torch {torch.__version__}")
PY
}

if [[ -x "${VENV}/bin/python" ]] && found="$(installed 2>/dev/null)"; then
    echo "peer: ${found} already installed in ${VENV}"
    exit 0
fi
echo "peer: creating ${VENV} (auto4dstem 0.2.8, torch 2.13.0+cpu; a few minutes)"
mkdir -p "${ROOT}/.peers"
python3 -m venv "${VENV}"
pip_install() {
    "${VENV}/bin/python" -m pip install --quiet "${PIN[@]}" "$@" 2>&1 \
        | { grep -v -e "^WARNING: Location" -e "requires .*, but you have" -e "dependency resolver" || true; }
}
pip_install --upgrade pip
pip_install "torch==2.13.0"
pip_install --no-deps "auto4dstem==0.2.8" "m3learning-util==2.0.10"
# Its declared numpy==1.25.2 / scipy==1.9.3 / scikit-learn==1.1.3 / scikit-image==0.19.3 / matplotlib==3.6.2 /
# tqdm==4.66.1 / typing_extensions==4.8.0 pins are replaced by current wheels (see 3. above); pip's resolver
# warns about them (and about torch==2.2.0), which is expected and filtered.
pip_install numpy scipy scikit-image scikit-learn opencv-python-headless h5py matplotlib tqdm requests \
    wget pygments "pandas<2.3" seaborn
echo "peer: $(installed) in ${VENV}"
"${VENV}/bin/python" -m pip freeze > "${VENV}/freeze.txt"
echo "peer: versions in ${VENV}/freeze.txt"
