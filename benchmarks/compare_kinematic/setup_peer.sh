#!/usr/bin/env bash
# Create the independent simulator's own environment, .peers/diffsims (git-ignored).
#
# diffsims 0.7 (GPL-3, with orix) cannot share stemkit's environment; it only exchanges
# files with it. Idempotent: does nothing when diffsims already imports there.
# Usage: bash benchmarks/compare_kinematic/setup_peer.sh
set -euo pipefail
# zarr<3: the pyxem stack (orix/diffsims I/O) is not ready for zarr 3.
bash "$(dirname "${BASH_SOURCE[0]}")/../setup_peer.sh" diffsims diffsims 0.7.0 "zarr<3"
