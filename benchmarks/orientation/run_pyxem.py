"""Orientation and phase maps with pyxem's template matching (issue 5), in the pyxem venv.

Runs in ``.peers/pyxem`` (``setup_pyxem.sh`` makes it: pyxem 0.21, diffsims 0.7, orix 0.15),
on the data of ``make_data.py``. The recipe is pyxem's own (its orientation-mapping examples,
PEERS.md):

1. the 4D array becomes a ``Diffraction2D`` with the known calibration: pixel size and the
   direct-beam pixel as the centre (data passed unflipped);
2. ``get_azimuthal_integral2d`` (the polar transform) over 0.1-1.6 1/Å (the direct beam left
   out, the detector's inscribed circle), 1 px radial steps, 360 azimuths (1° in plane),
   then the square-root gamma that pyxem's docs recommend;
3. a template library per phase: diffsims ``SimulationGenerator(300 keV)``
   ``calculate_diffraction2d`` over orix's ``get_sample_reduced_fundamental(resolution=1)``
   (the 1° grid), ``reciprocal_radius`` 1.6 1/Å, ``max_excitation_error`` 0.12 1/Å (thin
   crystals, PEERS.md), no direct beam;
4. ``get_orientation`` against each library; the phase is the one of higher correlation;
   ``to_single_phase_orientations`` gives the orix orientations.

Timing: "end to end" is steps 1, 2 and 4 on the whole scan in one call each (the polar set-up
and the flattening of each library that pyxem redoes on every call are thus paid once per
scan, as a user mapping a scan pays them). The libraries (step 3) are built once per crystal
and reported apart (``setup_seconds``). pyxem/hyperspy choose their own parallelism.

Writes ``results/pyxem[-quick].npz``: ``matrix`` (phase, scan_y, scan_x, 3, 3), the orix
orientation matrices O (lab → crystal; compare.py converts them), ``corr`` (phase, scan_y,
scan_x), ``factor`` (-1 where the mirrored template matched), ``seconds``, ``setup_seconds``
(per phase), ``cpu_seconds``, ``phases``, ``params``.

Run: ``.peers/pyxem/bin/python benchmarks/orientation/run_pyxem.py [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
RADIAL_RANGE = (0.1, 1.6)  # 1/Å
EXCITATION_ERROR = 0.12  # 1/Å
GAMMA = 0.5

#: Full unit cells (fractional positions) of stemkit's presets.
STRUCTURES = {
    "Cu": (3.6149, 225, [("Cu", (0, 0, 0)), ("Cu", (0, 0.5, 0.5)), ("Cu", (0.5, 0, 0.5)), ("Cu", (0.5, 0.5, 0))]),
    "Cu2O": (4.2696, 224, [("O", (0, 0, 0)), ("O", (0.5, 0.5, 0.5)), ("Cu", (0.25, 0.25, 0.25)),
                           ("Cu", (0.75, 0.75, 0.25)), ("Cu", (0.75, 0.25, 0.75)), ("Cu", (0.25, 0.75, 0.75))]),
}


def phase(name: str):
    """An orix Phase with the preset's cell and atoms."""
    from diffpy.structure import Atom, Lattice, Structure
    from orix.crystal_map import Phase

    a, space_group, atoms = STRUCTURES[name]
    structure = Structure(atoms=[Atom(element, xyz) for element, xyz in atoms], lattice=Lattice(a, a, a, 90, 90, 90))
    return Phase(name=name, space_group=space_group, structure=structure)


def libraries(names: list[str], kv: float, resolution: float) -> tuple[list, list[float]]:
    """One template library per phase (diffsims simulations), and the seconds each took."""
    from diffsims.generators.simulation_generator import SimulationGenerator
    from orix.sampling import get_sample_reduced_fundamental

    generator = SimulationGenerator(accelerating_voltage=kv)
    simulations, seconds = [], []
    for name in names:
        start = time.perf_counter()
        p = phase(name)
        rotations = get_sample_reduced_fundamental(resolution=resolution, point_group=p.point_group)
        simulations.append(generator.calculate_diffraction2d(p, rotation=rotations, reciprocal_radius=RADIAL_RANGE[1],
                                                             max_excitation_error=EXCITATION_ERROR,
                                                             with_direct_beam=False))
        seconds.append(time.perf_counter() - start)
        print(f"library {name}: {rotations.size} zone axes, {seconds[-1]:.1f} s", flush=True)
    return simulations, seconds


def map_scan(cube: np.ndarray, cal: dict, simulations: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1, 2 and 4: orix matrices (phase, ny, nx, 3, 3), correlations and mirror factors (phase, ny, nx)."""
    from pyxem.signals import Diffraction2D

    signal = Diffraction2D(cube)
    signal.calibration.scale = cal["k_step"]
    signal.calibration.units = r"$\AA^{-1}$"
    signal.calibration.center = (cal["origin_col"], cal["origin_row"])  # signal axes: x (columns) first
    npt = int(round((RADIAL_RANGE[1] - RADIAL_RANGE[0]) / cal["k_step"]))
    polar = signal.get_azimuthal_integral2d(npt=npt, npt_azim=360, radial_range=RADIAL_RANGE, mean=True)
    polar = polar**GAMMA
    matrices, correlations, factors = [], [], []
    for simulation in simulations:
        result = polar.get_orientation(simulation, n_best=1, show_progressbar=False)
        correlations.append(np.asarray(result.data)[..., 0, 1])
        factors.append(np.asarray(result.data)[..., 0, 3])  # -1: the mirrored template matched
        matrices.append(result.to_single_phase_orientations(show_progressbar=False).to_matrix()[..., 0, :, :])
    return np.stack(matrices), np.stack(correlations), np.stack(factors)


def main() -> None:
    import pyxem

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 16x16 development data")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--resolution", type=float, default=1.0, help="library grid (degrees)")
    parser.add_argument("--rows", type=int, default=0, help="use only the first N scan rows")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    data = HERE / "data" / ("quick" if args.quick else "full")
    cal = json.loads((data / "calibration.json").read_text())
    cube = np.load(data / "cube.npy")
    if args.rows:
        cube = cube[: args.rows]
    n = cube.shape[0] * cube.shape[1]
    print(f"pyxem {pyxem.__version__}, {n} patterns", flush=True)
    simulations, setup_seconds = libraries(cal["phases"], cal["beam_energy_kev"], args.resolution)
    warnings.filterwarnings("ignore")
    map_scan(cube[:1, :2], cal, simulations)  # warm-up: numba compilation, imports
    seconds, cpu = [], []
    for _ in range(args.repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        matrix, corr, factor = map_scan(cube, cal, simulations)
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    target = out / f"pyxem{'-quick' if args.quick else ''}{args.tag}.npz"
    summary = (f"polar {RADIAL_RANGE[0]}-{RADIAL_RANGE[1]} 1/Å × 360 azimuths, gamma {GAMMA}, "
               f"max_excitation_error {EXCITATION_ERROR}, CPU/wall {cpu[-1] / seconds[-1]:.2f}")
    params = {"pyxem": pyxem.__version__, "resolution_deg": args.resolution, "radial_range": RADIAL_RANGE,
              "excitation_error": EXCITATION_ERROR, "gamma": GAMMA, "rows": int(cube.shape[0]), "summary": summary}
    np.savez(target, matrix=matrix, corr=corr, factor=factor, seconds=np.array(seconds), cpu_seconds=np.array(cpu),
             setup_seconds=np.array(setup_seconds), phases=np.array(cal["phases"]), n_patterns=n,
             params=json.dumps(params))
    print(f"pyxem template matching: {n} patterns, end to end best {min(seconds):.1f} s "
          f"({n / min(seconds):.1f} patterns/s, CPU/wall {cpu[-1] / seconds[-1]:.2f}); libraries "
          f"{sum(setup_seconds):.1f} s → {target.name}", flush=True)


if __name__ == "__main__":
    main()
