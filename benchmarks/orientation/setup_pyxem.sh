#!/usr/bin/env bash
# Create the pyxem peer environment in .peers/pyxem (idempotent): pyxem 0.21 pulls diffsims 0.7 and orix 0.15.
# pyxem pins zarr<3 and other versions stemkit does not, so it gets its own venv.
set -euo pipefail
bash "$(dirname "${BASH_SOURCE[0]}")/../setup_peer.sh" pyxem pyxem "0.21.*"
