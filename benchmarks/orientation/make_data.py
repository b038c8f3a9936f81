"""Render the orientation benchmark's data (issue 5): a Cu/Cu2O polycrystal with ground truth.

``stemkit.physics.polycrystal``: Voronoi grains of random orientation (uniform over each
phase's fundamental zone) and phase, 128x128 patterns at 300 keV, 1 mrad convergence
(disk radius ~2 px), 0.025 1/Å per pixel, foil 10-40 nm, 5 % diffuse background and
Poisson noise at 1e5 electrons per pattern (the dose stemkit's evaluation uses; issue 4
benchmarks peak finding from 1e4 to 1e6). Full: 64x64 scan (4096 patterns), 256 grains (so
that accuracy is an average over 256 orientations, not a dozen); ``--quick``: 16x16, 32 grains.

Writes to ``data/`` (``data/quick/`` with ``--quick``):

- ``cube.npy``: (scan_y, scan_x, ky, kx) float32 counts;
- ``truth.npz``: ``quaternion`` (scan_y, scan_x, 4), (w, x, y, z), crystal → lab (DESIGN.md),
  ``phase`` (scan_y, scan_x) index into ``phases``, ``grain``, ``thickness_nm``;
- ``probe.npy``: a vacuum probe (the direct beam alone, no specimen, 100 frames summed), as
  a user records for py4DSTEM's kernel; stemkit does not use it;
- ``calibration.json``: ``k_step`` (1/Å per pixel), the direct-beam pixel ``origin_row``,
  ``origin_col`` (row = ky, column = kx), ``beam_energy_kev``, ``convergence_mrad``,
  ``probe_radius_px``, ``scan_step_nm``, ``dose``, ``phases``, ``seed``.

Run: ``.venv/bin/python benchmarks/orientation/make_data.py [--quick]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stemkit.data.datacube import datacube  # noqa: E402
from stemkit.physics.render import Detector, disk_radius, finish_patterns, render_disks  # noqa: E402
from stemkit.physics.specimens import polycrystal  # noqa: E402

HERE = Path(__file__).resolve().parent
PHASES = ("Cu", "Cu2O")
SETTINGS = dict(pattern_size=128, k_step=0.025, beam_energy_kev=300.0, convergence_mrad=1.0, dose=1e5,
                scan_step_nm=2.0)
PROBE_FRAMES = 100


def data_dir(quick: bool) -> Path:
    """Where the data of a run live."""
    return HERE / "data" / ("quick" if quick else "full")


def load_cube(folder: Path):
    """The cube written to ``folder`` as the calibrated canonical DataArray every method is given."""
    cal = json.loads((folder / "calibration.json").read_text())
    return datacube(np.load(folder / "cube.npy"), scan_step_nm=cal["scan_step_nm"], k_step=cal["k_step"],
                    beam_energy_kev=cal["beam_energy_kev"], attrs={"convergence_mrad": cal["convergence_mrad"]})


def vacuum_probe(origin: tuple[float, float], seed: int) -> np.ndarray:
    """The direct beam alone (same detector, blur and dose per frame), summed over ``PROBE_FRAMES`` frames."""
    size, k_step = SETTINGS["pattern_size"], SETTINGS["k_step"]
    detector = Detector(shape=(size, size), k_step=k_step, k_origin=origin, psf_sigma_px=0.5)
    radius = disk_radius(SETTINGS["convergence_mrad"], SETTINGS["beam_energy_kev"])
    beam = render_disks(np.zeros((1, 1)), np.zeros((1, 1)), np.ones((1, 1)), detector=detector, radius=radius)
    return finish_patterns(beam, detector=detector, dose=SETTINGS["dose"] * PROBE_FRAMES, rng=seed)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="16x16 scan, 32 grains (development)")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    scan_shape, n_grains = ((16, 16), 32) if args.quick else ((64, 64), 256)
    out = data_dir(args.quick)
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    specimen = polycrystal(PHASES, scan_shape=scan_shape, n_grains=n_grains, seed=args.seed, **SETTINGS)
    cube = specimen["intensity"]
    kx, ky = cube["kx"].values, cube["ky"].values
    k_step = float(kx[1] - kx[0])
    origin = (float(-ky[0] / k_step), float(-kx[0] / k_step))  # pixel (row, column) of k = 0
    phase_names = [str(p) for p in specimen.attrs["phases"]]
    phase_index = np.searchsorted(np.array(phase_names), specimen["phase"].values)
    assert list(np.array(phase_names)[phase_index].ravel()) == list(specimen["phase"].values.ravel())

    np.save(out / "cube.npy", cube.values.astype(np.float32))
    np.save(out / "probe.npy", vacuum_probe(origin, seed=args.seed + 1000).astype(np.float32))
    np.savez(out / "truth.npz", quaternion=specimen["quaternion"].values, phase=phase_index,
             grain=specimen["grain"].values, thickness_nm=specimen["thickness"].values,
             phases=np.array(phase_names))
    calibration = {
        "k_step": k_step, "origin_row": origin[0], "origin_col": origin[1],
        "beam_energy_kev": SETTINGS["beam_energy_kev"], "convergence_mrad": SETTINGS["convergence_mrad"],
        "probe_radius_px": disk_radius(SETTINGS["convergence_mrad"], SETTINGS["beam_energy_kev"]) / k_step,
        "scan_step_nm": SETTINGS["scan_step_nm"], "dose": SETTINGS["dose"], "phases": phase_names,
        "scan_shape": list(scan_shape), "pattern_shape": list(cube.shape[2:]), "n_grains": n_grains,
        "seed": args.seed,
    }
    (out / "calibration.json").write_text(json.dumps(calibration, indent=1))
    counts = cube.values.reshape(-1, *cube.shape[2:]).sum(axis=(1, 2))
    share = {name: float(np.mean(phase_index == i)) for i, name in enumerate(phase_names)}
    print(f"{out}: {np.prod(scan_shape)} patterns {cube.shape[2:]}, {n_grains} grains, phase shares {share}, "
          f"counts/pattern median {np.median(counts):.3g}, max pixel {cube.values.max():.0f}, "
          f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
