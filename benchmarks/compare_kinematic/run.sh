#!/usr/bin/env bash
# stemkit's kinematic simulator against diffsims (issue 3): set up the peer, run the comparison.
# Usage (from anywhere): bash benchmarks/compare_kinematic/run.sh
# Exit status 0 only if every case passes and both negative controls are detected.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${HERE}/../.." && pwd)"

bash "${HERE}/setup_peer.sh"
cd "${ROOT}"
exec "${ROOT}/.venv/bin/python" "${HERE}/compare.py" "$@"
