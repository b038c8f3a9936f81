#!/usr/bin/env bash
# Create the independent simulator's own environment, .peers/diffsims (git-ignored).
#
# diffsims 0.7 (GPL-3, with orix) cannot share stemkit's environment; it only exchanges
# files with it. Idempotent: does nothing when diffsims already imports there.
# Usage: bash benchmarks/compare_kinematic/setup_peer.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${ROOT}/.peers/diffsims"
DIFFSIMS_VERSION="0.7.0"

if [[ -x "${VENV}/bin/python" ]] && "${VENV}/bin/python" - "${DIFFSIMS_VERSION}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
import diffsims  # noqa: F401
sys.exit(0 if version("diffsims") == sys.argv[1] else 1)
PY
then
    echo "peer: diffsims ${DIFFSIMS_VERSION} already installed in ${VENV}"
    exit 0
fi

echo "peer: creating ${VENV} and installing diffsims ${DIFFSIMS_VERSION} (about a minute)"
mkdir -p "${ROOT}/.peers"
python3 -m venv "${VENV}"
"${VENV}/bin/pip" install --quiet --upgrade pip 2>&1 | { grep -v "^WARNING: Location" || true; }
# zarr<3: the pyxem stack (orix/diffsims I/O) is not ready for zarr 3.
"${VENV}/bin/pip" install --quiet "diffsims==${DIFFSIMS_VERSION}" "zarr<3" 2>&1 | { grep -v "^WARNING: Location" || true; }
"${VENV}/bin/python" -c "import diffsims, orix; print('peer: diffsims', diffsims.__version__, 'orix', orix.__version__)"
