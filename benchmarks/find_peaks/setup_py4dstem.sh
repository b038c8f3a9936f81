#!/usr/bin/env bash
# Create the py4DSTEM peer environment in .peers/py4dstem (idempotent).
# py4DSTEM pins numpy<2 and scikit-learn<1.5, so it cannot share stemkit's venv.
set -euo pipefail
bash "$(dirname "${BASH_SOURCE[0]}")/../setup_peer.sh" py4dstem py4DSTEM 0.14.18
