#!/usr/bin/env bash
# Create the pyxem peer environment in .peers/pyxem (idempotent): pyxem 0.21 pulls diffsims 0.7 and orix 0.15.
# pyxem pins zarr<3 and other versions stemkit does not, so it gets its own venv.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.peers/pyxem"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import pyxem, sys; sys.exit(not pyxem.__version__.startswith('0.21'))" 2>/dev/null; then
    echo "pyxem $("$VENV/bin/python" -c 'import pyxem; print(pyxem.__version__)') already installed in $VENV"
    exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "pyxem==0.21.*"
"$VENV/bin/python" -c "import pyxem, diffsims, orix; print('pyxem', pyxem.__version__, 'diffsims', diffsims.__version__, 'orix', orix.__version__)"
