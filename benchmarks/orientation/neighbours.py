"""The neighbours' offers and twin flags of ``OrientationMapper.predict``, on and off, on several specimens.

For each specimen this prints median error, % within 5° (strict and counting a flagged ambiguity), %
flagged, phase accuracy and the CPU seconds of ``predict`` from found peaks, with
``neighbours=False`` (every pattern on its own) and with the default :class:`NeighbourSettings`:

- the issue-5 benchmark cube (``make_data.py``'s 64×64 Cu/Cu2O polycrystal, 256 grains);
- the model card's thick Bloch-wave polycrystal (32×32, 15-60 nm, ``publish.THICK_DYNAMICAL``);
- kinematic 32×32 polycrystals of 400 grains (about 2.5 patterns per grain) and 1,024 grains (about one
  per pattern), where neighbours mostly belong to other grains: the offers must not hurt there.

Run: ``.venv/bin/python benchmarks/orientation/neighbours.py`` (one torch thread; needs the benchmark data).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from stemkit.orientation.evaluation import _as_decoded
from stemkit.orientation.mapper import OrientationMapper
from stemkit.orientation.metrics import orientation_metrics
from stemkit.orientation.publish import THICK_DYNAMICAL
from stemkit.physics.rotations import quaternion_to_matrix
from stemkit.physics.specimens import polycrystal
from stemkit.preprocess import find_peaks

# last: make_data puts its own checkout on sys.path, which must not decide where stemkit comes from
from make_data import data_dir, load_cube  # noqa: E402

POLYCRYSTALS = {
    "thick Bloch polycrystal, 64 grains": THICK_DYNAMICAL,
    "kinematic polycrystal, 400 grains": {"n_grains": 400, "seed": 7},
    "kinematic polycrystal, 1,024 grains": {"n_grains": 1024, "seed": 8},
}


def specimens(mapper: OrientationMapper):
    """``(name, peaks, true rotations, true phase indices)`` of every specimen."""
    names = [c.name for c in mapper.crystals_]
    folder = data_dir(quick=False)
    truth = np.load(folder / "truth.npz")
    yield ("benchmark cube, 256 grains", find_peaks(load_cube(folder)),
           quaternion_to_matrix(truth["quaternion"].reshape(-1, 4)), truth["phase"].ravel())
    for name, spec in POLYCRYSTALS.items():
        sample = polycrystal(phases=tuple(names), scan_shape=(32, 32), dose=1e5, **spec)
        phase = np.array([names.index(p) for p in sample["phase"].values.reshape(-1)])
        yield name, find_peaks(sample.intensity), quaternion_to_matrix(sample["quaternion"].values.reshape(-1, 4)), phase


def main() -> None:
    torch.set_num_threads(1)
    mapper = OrientationMapper.pretrained("cu-cu2o")
    names = [c.name for c in mapper.crystals_]
    groups = [c.point_group for c in mapper.crystals_]
    print(f"{'specimen':38s} {'neighbours':10s} {'median°':>8s} {'≤5° %':>7s} {'≤5° or flagged %':>17s} "
          f"{'flagged %':>10s} {'phase %':>8s} {'CPU s':>7s}")
    for name, peaks, rotations, phase in specimens(mapper):
        for neighbours in (False, True):
            start = time.process_time()
            result = mapper.predict(peaks, progress=False, neighbours=neighbours)
            cpu = time.process_time() - start
            figures = orientation_metrics(_as_decoded(result, names), rotations, phase, groups)
            print(f"{name:38s} {'on' if neighbours else 'off':10s} {figures['median_deg']:8.2f} "
                  f"{figures['within_5deg']:7.1f} {figures['within_5deg_or_flagged']:17.1f} "
                  f"{figures['ambiguous']:10.1f} {figures['phase_accuracy']:8.1f} {cpu:7.1f}", flush=True)


if __name__ == "__main__":
    main()
