#!/usr/bin/env bash
# Create a peer's own virtual environment, .peers/NAME (git-ignored), once: the peers (py4DSTEM, pyxem,
# diffsims, abTEM) pin versions stemkit's environment cannot hold, and only exchange files with it.
#
# Usage: bash benchmarks/setup_peer.sh NAME MODULE VERSION [EXTRA_REQUIREMENT ...]
#   NAME     the PyPI distribution, also the folder under .peers (e.g. py4dstem)
#   MODULE   what it imports as (e.g. py4DSTEM)
#   VERSION  exact (0.14.18) or a series (0.21.*); installed as NAME==VERSION
# Idempotent: does nothing when MODULE imports there at a matching version.
set -euo pipefail
NAME="$1" MODULE="$2" VERSION="$3"
shift 3
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ROOT}/.peers/${NAME}"

installed() {
    "${VENV}/bin/python" - "${NAME}" "${MODULE}" "${VERSION}" <<'PY'
import fnmatch
import importlib
import sys
from importlib.metadata import version

name, module, wanted = sys.argv[1:]
importlib.import_module(module)
found = version(name)
print(found)
sys.exit(0 if fnmatch.fnmatchcase(found, wanted) else 1)
PY
}

if [[ -x "${VENV}/bin/python" ]] && found="$(installed 2>/dev/null)"; then
    echo "peer: ${NAME} ${found} already installed in ${VENV}"
    exit 0
fi
echo "peer: creating ${VENV} and installing ${NAME}==${VERSION} $* (about a minute)"
mkdir -p "${ROOT}/.peers"
python3 -m venv "${VENV}"
"${VENV}/bin/pip" install --quiet --upgrade pip 2>&1 | { grep -v "^WARNING: Location" || true; }
"${VENV}/bin/pip" install --quiet "${NAME}==${VERSION}" "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
echo "peer: ${NAME} $(installed) in ${VENV}"
