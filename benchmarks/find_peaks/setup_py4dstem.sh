#!/usr/bin/env bash
# Create the py4DSTEM peer environment in .peers/py4dstem (idempotent).
# py4DSTEM pins numpy<2 and scikit-learn<1.5, so it cannot share stemkit's venv.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.peers/py4dstem"
VERSION="0.14.18"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import py4DSTEM, sys; sys.exit(py4DSTEM.__version__ != '$VERSION')" 2>/dev/null; then
    echo "py4DSTEM $VERSION already installed in $VENV"
    exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "py4dstem==$VERSION"
"$VENV/bin/python" -c "import py4DSTEM; print('py4DSTEM', py4DSTEM.__version__, 'in', '$VENV')"
