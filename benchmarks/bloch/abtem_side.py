"""abTEM side of the Bloch-wave benchmark (issue 11): static plane-wave multislice, run in .peers/abtem.

Reads ``cases.json`` (written by cases.py in stemkit's environment; nothing here imports
stemkit) and for every case:

- builds the zone-axis supercell (ase ``Atoms``, orthogonal, periodic) and an abTEM ``Potential``
  with the Lobato & Van Dyck parametrization (abTEM's default) and abTEM's default infinite
  projection (each atom's projected potential, exact in Fourier space, on the slice that holds
  its centre). The potential of one period (the middle one of three) is tiled to the largest
  thickness, with exit planes after every whole number of periods that the case lists, so all
  thicknesses come from one run. No frozen phonons: a static potential, in two models:

  ``dw``      each element's potential smeared by its Debye–Waller factor (abTEM
              ``LobatoParametrization(sigmas=…)`` with σ = sqrt(B / 8π²), the one-dimensional rms
              displacement, so that the scattering factor is damped by exp(-B s²), s = |g⊥|/2),
              B from stemkit's presets: the potential stemkit's Bloch simulation uses for them;
  ``static``  every B = 0 (point-like nuclei, as asked in issue 11).

  Each model is run twice: at the default sampling and a finer one (``/finer``); their difference
  is the reference's own uncertainty, printed per case.
- propagates a ``PlaneWave`` tilted by the case's ``abtem_tilt_mrad`` (abTEM tilts the beam; the
  crystal stays put) and, in the dw model, by the opposite tilt too (the sign control);
- reads the exit-wave diffraction intensities (``diffraction_patterns``, fractions of the
  incident beam) at the listed reflections, locating each by abTEM's own reciprocal-space
  coordinates (1/Å), and keeps the whole pattern within 3 1/Å with its coordinates.

Sampling (printed): real-space pixel <= PIXEL[model] Å, so that abTEM's 2/3 anti-aliasing aperture
passes beams out to 1/(3 x pixel); slices of Lz / ceil(Lz / SLICE) <= SLICE Å. ``--check`` adds,
for CHECK_CASES, the finite projection at a fine pixel (the 3D potential integrated over each
slice: how much squeezing atoms into sheets changes HOLZ scattering) and a projected-potential
multislice (the potential averaged along z: no HOLZ at all, the projection approximation).

Usage: .peers/abtem/bin/python benchmarks/bloch/abtem_side.py [DATA_DIR] [--check] [--only SUBSTRING]
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import abtem  # noqa: E402
import dask  # noqa: E402
import numpy as np  # noqa: E402
from abtem.core.energy import energy2sigma, energy2wavelength  # noqa: E402
from abtem.multislice import FourierMultislice  # noqa: E402
from abtem.parametrizations import LobatoParametrization  # noqa: E402
from ase import Atoms  # noqa: E402

PIXEL = {"dw": 0.04, "static": 0.025}  # Å: anti-aliasing cut-off ~8.3 and ~13 1/Å
FINER = {"dw": (0.0266, 0.25), "static": (0.0166, 0.5)}  # (pixel, slice) of the /finer runs
SLICE = 0.5  # Å, largest slice thickness
PROJECTION = "infinite"
KEEP_PATTERN = 3.0  # 1/Å, radius of the stored whole patterns
CHECK_CASES = ("Cu [001] on axis 200 keV",)

abtem.config.set({"precision": "float64", "device": "cpu", "fft": "fftw", "fftw.threads": 1,
                  "diagnostics.progress_bar": False})
dask.config.set(scheduler="synchronous")
warnings.filterwarnings("ignore", message=".*overspecified.*")


def debye_waller_sigmas(case: dict) -> dict[str, float]:
    """abTEM's σ (Å) per element: exp(-2π² σ² k²) = exp(-B k² / 4) gives σ² = B / (8π²)."""
    return {element: math.sqrt(b / (8 * math.pi**2)) for element, b in case["b_iso_by_element"].items() if b > 0}


def periodic_potential(case: dict, gpts, dz: float, n_per_period: int, sigmas, projection: str) -> np.ndarray:
    """The potential slices (V·Å) of one period along z, (n_per_period, nx, ny)."""
    lx, ly, lz = case["cell_angstrom"]
    cell = Atoms(case["symbols"], positions=case["positions_angstrom"], cell=[lx, ly, lz], pbc=True)
    parametrization = LobatoParametrization(sigmas=sigmas) if sigmas else LobatoParametrization()
    potential = abtem.Potential(cell * (1, 1, 3), gpts=gpts, slice_thickness=dz, parametrization=parametrization,
                                projection=projection)
    assert len(potential) == 3 * n_per_period
    array = np.asarray(potential.build().compute().array, dtype=float)
    return array[n_per_period:2 * n_per_period]


def simulate(case: dict, tilt_mrad, model: str, pixel: float | None = None, slice_max: float = SLICE,
             projection: str = PROJECTION, averaged: bool = False) -> dict:
    lx, ly, lz = case["cell_angstrom"]
    pixel = PIXEL[model] if pixel is None else pixel
    n_per_period = math.ceil(lz / slice_max - 1e-9)
    dz = lz / n_per_period
    gpts = tuple(2 * math.ceil(length / (2 * pixel)) for length in (lx, ly))
    sigmas = debye_waller_sigmas(case) if model == "dw" else None
    start = time.perf_counter()
    period = periodic_potential(case, gpts, dz, n_per_period, sigmas, projection)
    if averaged:  # the projection approximation: the period's projected potential spread evenly along z
        period = np.broadcast_to(period.mean(axis=0), period.shape).copy()
    repeats = case["repeats"]
    slices = np.tile(period, (max(repeats), 1, 1))
    exit_planes = tuple(r * n_per_period - 1 for r in repeats)
    potential = abtem.PotentialArray(slices, slice_thickness=dz, extent=(lx, ly), exit_planes=exit_planes)
    thickness = np.asarray(potential.exit_thicknesses, dtype=float)
    assert np.allclose(thickness, case["thickness_angstrom"], rtol=1e-9), (thickness, case["thickness_angstrom"])
    wave = abtem.PlaneWave(energy=case["beam_energy_kev"] * 1e3, tilt=tuple(float(t) for t in tilt_mrad))
    exit_waves = wave.multislice(potential, algorithm=FourierMultislice(order=1)).compute()
    patterns = exit_waves.diffraction_patterns(max_angle="cutoff", fftshift=True).compute()
    seconds = time.perf_counter() - start
    array = np.asarray(patterns.array, dtype=float).reshape(len(repeats), *patterns.array.shape[-2:])
    kx, ky = (np.asarray(c, dtype=float).ravel() for c in patterns.coordinates)  # kx is array axis -2
    assert array.shape == (len(repeats), len(kx), len(ky)), array.shape

    # Each listed reflection, found by abTEM's own coordinates.
    g = np.array(case["g_specimen"], dtype=float)
    ix = np.argmin(np.abs(kx[None, :] - g[:, :1]), axis=1)
    iy = np.argmin(np.abs(ky[None, :] - g[:, 1:2]), axis=1)
    position_error = np.hypot(kx[ix] - g[:, 0], ky[iy] - g[:, 1])
    inside = (np.abs(g[:, 0]) <= kx.max()) & (np.abs(g[:, 1]) <= ky.max())
    keep_x, keep_y = np.abs(kx) <= KEEP_PATTERN, np.abs(ky) <= KEEP_PATTERN
    return {
        "beams": np.where(inside[None, :], array[:, ix, iy], np.nan),  # (T, n_hkl)
        "direct": array[:, np.argmin(np.abs(kx)), np.argmin(np.abs(ky))],  # (T,)
        "position_error": np.where(inside, position_error, np.nan),
        "pattern": array[:, keep_x][:, :, keep_y],
        "pattern_kx": kx[keep_x],
        "pattern_ky": ky[keep_y],
        "total": array.sum(axis=(1, 2)),
        "thickness": thickness,
        "info": {"tilt_mrad": [float(t) for t in tilt_mrad], "model": model, "projection": projection,
                 "gpts": list(gpts), "pixel_angstrom": [lx / gpts[0], ly / gpts[1]], "slice_angstrom": dz,
                 "n_slices": int(max(repeats) * n_per_period), "sigmas_angstrom": sigmas or {},
                 "averaged_along_z": averaged,
                 "cutoff_inv_angstrom": float(min(kx.max(), ky.max())), "seconds": seconds},
    }


def _report(name: str, label: str, result: dict) -> None:
    info = result["info"]
    direct = result["direct"] if len(result["direct"]) <= 5 else result["direct"][[0, -1]]
    print(f"{name:44s} {label:13s} tilt ({info['tilt_mrad'][0]:+7.3f}, {info['tilt_mrad'][1]:+7.3f}) mrad, "
          f"pixel {info['pixel_angstrom'][0]:.4f} Å (cut-off {info['cutoff_inv_angstrom']:.1f} 1/Å), slice "
          f"{info['slice_angstrom']:.3f} Å x {info['n_slices']}: direct beam {' '.join(f'{d:.4f}' for d in direct)}, "
          f"pattern sum >= {result['total'].min():.4f}, max |Δk| {np.nanmax(result['position_error']):.0e}, "
          f"{info['seconds']:.1f} s", flush=True)


def main() -> None:
    argv = sys.argv[1:]
    only = argv[argv.index("--only") + 1] if "--only" in argv else None
    check = "--check" in argv
    positional = [a for i, a in enumerate(argv) if not a.startswith("--") and (i == 0 or argv[i - 1] != "--only")]
    data = Path(positional[0]) if positional else Path(__file__).resolve().parent / "data"
    cases = json.loads((data / "cases.json").read_text())["cases"]
    arrays: dict[str, np.ndarray] = {}
    meta = {"abtem_version": abtem.__version__, "settings": {
        "potential": f"abtem.Potential(LobatoParametrization(sigmas), projection='{PROJECTION}'), one period tiled; "
                     "static (no frozen phonons)",
        "pixel_angstrom": PIXEL, "max_slice_angstrom": SLICE, "finer_pixel_and_slice": FINER, "precision": "float64",
        "multislice": "FourierMultislice(order=1) (paraxial Fresnel propagator, abTEM's default)",
        "readout": "Waves.diffraction_patterns(max_angle='cutoff') at abTEM's coordinates of each g"}, "cases": []}
    elements = sorted({symbol for case in cases for symbol in case["symbols"]})
    table = json.loads((Path(abtem.__file__).parent / "parametrizations" / "data" / "lobato.json").read_text())
    meta["lobato_parameters"] = {element: table[element] for element in elements}
    started = time.perf_counter()

    def store(index: int, label: str, result: dict, entry: dict) -> None:
        for key in ("beams", "direct", "position_error", "pattern", "pattern_kx", "pattern_ky", "total", "thickness"):
            arrays[f"{index}/{label}/{key}"] = np.asarray(result[key])
        entry["runs"][label] = result["info"]

    for index, case in enumerate(cases):
        if only and only not in case["name"]:
            continue
        energy = case["beam_energy_kev"] * 1e3
        entry = {"index": index, "name": case["name"], "wavelength_angstrom": float(energy2wavelength(energy)),
                 "sigma_rad_per_volt_angstrom": float(energy2sigma(energy)), "runs": {}}
        tilt = case["abtem_tilt_mrad"]
        runs = [("dw/plus", "dw", tilt, {}), ("dw/finer", "dw", tilt, dict(zip(("pixel", "slice_max"), FINER["dw"]))),
                ("static/plus", "static", tilt, {}),
                ("static/finer", "static", tilt, dict(zip(("pixel", "slice_max"), FINER["static"])))]
        if case["tilt_mrad"] and not case.get("special"):
            runs.insert(1, ("dw/minus", "dw", [-t for t in tilt], {}))
        for label, model, run_tilt, kwargs in runs:
            result = simulate(case, run_tilt, model, **kwargs)
            store(index, label, result, entry)
            _report(case["name"], label, result)
        if check and case["name"] in CHECK_CASES:
            checks = [("dw/finite", "dw", {"projection": "finite", "pixel": 0.0125, "slice_max": 0.25}),
                      ("dw/projected", "dw", {"averaged": True, "slice_max": 0.25})]
            for label, model, kwargs in checks:
                result = simulate(case, tilt, model, **kwargs)
                store(index, label, result, entry)
                base = f"{index}/{model}/finer"
                difference = max(np.nanmax(np.abs(result["beams"] - arrays[f"{base}/beams"])),
                                 np.max(np.abs(result["direct"] - arrays[f"{base}/direct"])))
                entry["runs"][label]["max_abs_difference_vs_default"] = float(difference)
                _report(case["name"], label, result)
                print(f"{'':44s} {label:13s} vs {model}/finer: max |ΔI| = {difference:.1e} of the incident beam",
                      flush=True)
        meta["cases"].append(entry)
    meta["seconds"] = time.perf_counter() - started
    suffix = "" if only is None else "_partial"
    np.savez_compressed(data / f"abtem{suffix}.npz", **arrays)
    (data / f"abtem{suffix}.json").write_text(json.dumps(meta, indent=1))
    print(f"abTEM {abtem.__version__}: wrote {data / f'abtem{suffix}.npz'} and .json "
          f"({meta['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
