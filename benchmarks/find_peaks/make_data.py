"""Render the benchmark patterns for issue 4 (stemkit vs py4DSTEM Bragg-peak finding).

Two families of 128x128 patterns, each at several doses (electrons per pattern), with
per-reflection ground truth in absolute detector pixels:

- ``lattice``: the random 2D lattices of ``tests/preprocess/test_peaks.py`` (disk radius
  3 px, spot intensities 10^-3.5..10^-1 of the direct beam, 30 % Lorentzian background
  of HWHM 0.3 1/Å), reimplemented here so the benchmark does not import the tests;
- ``cucu2o``: kinematic patterns of Cu and Cu2O in random orientations, 10-40 nm thick,
  300 keV, 1 mrad (disk radius ~2 px), 0.5 px detector blur, 5 % Lorentzian background
  (the settings of :func:`stemkit.physics.specimens.polycrystal`), one random
  orientation per pattern.

Every pattern gets a small random beam shift (descan) applied to all its reflections.
The per-pixel SNR of a reflection is its disk height per pixel (expected signal counts
over the disk area) over the Poisson noise of the background per pixel,
``sqrt(max(background, 1))``: the measure of the issue and of the tests.

Each ``<family>_dose<dose>.npz`` holds ``patterns`` (n, 128, 128) float32 counts, the
vacuum ``probe`` (the direct beam alone, summed over 100 frames: 100x the dose), truth
arrays ``truth_row``, ``truth_col`` (pixels), ``truth_counts``, ``truth_background``
(counts per pixel under the disk), ``truth_snr`` (per pixel), padded with NaN; index 0
of each pattern is the direct beam; and scalars ``k_step`` (1/Å), ``origin_row``,
``origin_col`` (pixel of k = 0), ``radius_px``, ``dose``.

Run: ``.venv/bin/python benchmarks/find_peaks/make_data.py [--n 1024] [--out DIR]``
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stemkit.physics.presets import crystal as preset_crystal  # noqa: E402
from stemkit.physics.render import Detector, disk_radius, finish_patterns, lorentzian_background, render_disks  # noqa: E402
from stemkit.physics.rotations import quaternion_to_matrix, random_fundamental_zone  # noqa: E402
from stemkit.physics.specimens import Optics, spot_patterns  # noqa: E402

DOSES = (1e4, 5e4, 2e5, 1e6)
SHAPE = (128, 128)
PROBE_FRAMES = 100
BEAM_SHIFT = 0.01  # 1/Å, the largest descan in either direction


@dataclass(frozen=True)
class Family:
    """How one family of patterns is drawn: its detector, disks and background."""

    name: str
    detector: Detector
    radius: float  # 1/Å
    background_fraction: float
    background_gamma: float  # 1/Å, HWHM of the Lorentzian


def lattice_family() -> Family:
    """The random-lattice patterns of the tests: 0.015 1/Å pixels, 3 px disks, 30 % background."""
    return Family("lattice", Detector(shape=SHAPE, k_step=0.015), 0.045, 0.3, 0.3)


def crystal_family() -> Family:
    """Cu / Cu2O patterns with the settings of ``specimens.polycrystal``."""
    optics = Optics()
    radius = disk_radius(optics.convergence_mrad, optics.beam_energy_kev)
    return Family("cucu2o", optics.detector(), radius, optics.background_fraction, optics.background_width)


def random_lattice_spots(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Randomly oriented oblique 2D lattices (as in the tests): kx, ky (1/Å), intensity; direct beam first."""
    ij = np.array([(i, j) for i in range(-5, 6) for j in range(-5, 6) if (i, j) != (0, 0)], float)
    rows = []
    for _ in range(n):
        a = rng.uniform(0.22, 0.32)
        angle = rng.uniform(0, np.pi)
        basis = a * np.array([[np.cos(angle), np.sin(angle)], [np.cos(angle + 1.9), np.sin(angle + 1.9)]])
        g = ij @ basis
        g = g[np.hypot(*g.T) < 0.85]
        spot = 10 ** rng.uniform(-3.5, -1.0, len(g))
        rows.append((np.r_[0.0, g[:, 0]], np.r_[0.0, g[:, 1]], np.r_[1.0, spot]))
    return _pad_rows(rows)


def crystal_spots(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kinematic Cu and Cu2O spots (half each) in random orientations, 10-40 nm thick."""
    optics = Optics()
    rows = []
    for index, name in enumerate(("Cu", "Cu2O")):
        count = n // 2 + (n % 2 if index == 0 else 0)
        crystal = preset_crystal(name)
        quaternions = random_fundamental_zone(count, crystal.point_group, seed=rng)
        thickness = rng.uniform(10.0, 40.0, count)
        kx, ky, fraction = spot_patterns(crystal, quaternion_to_matrix(quaternions), thickness, optics)
        rows += [(kx[i][fraction[i] > 0], ky[i][fraction[i] > 0], fraction[i][fraction[i] > 0]) for i in range(count)]
    order = rng.permutation(n)
    return _pad_rows([rows[i] for i in order])


def _pad_rows(rows: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack ragged (kx, ky, intensity) rows, padding intensity with 0 (render skips it)."""
    width = max(len(r[0]) for r in rows)
    out = np.zeros((3, len(rows), width))
    for i, row in enumerate(rows):
        for j in range(3):
            out[j, i, : len(row[j])] = row[j]
    return out[0], out[1], out[2]


def keep_on_detector(kx, ky, intensity, family: Family):
    """Drop reflections whose disks cannot touch the detector (keeps the truth arrays small)."""
    det = family.detector
    oy, ox = det.origin
    col, row = kx / det.k_step + ox, ky / det.k_step + oy
    margin = family.radius / det.k_step + 2
    visible = (intensity > 0) & (col > -margin) & (col < SHAPE[1] - 1 + margin) & (row > -margin) & (row < SHAPE[0] - 1 + margin)
    visible[:, 0] = True
    width = int(visible.sum(axis=1).max())
    order = np.argsort(~visible, axis=1, kind="stable")[:, :width]
    take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
    return take(kx), take(ky), np.where(take(visible), take(intensity), 0.0)


def render(family: Family, kx, ky, intensity, dose: float, seed: int) -> dict[str, np.ndarray]:
    """Noisy patterns and per-reflection truth (pixels, counts, background, per-pixel SNR) at one dose."""
    det = family.detector
    signal = render_disks(kx, ky, intensity, detector=det, radius=family.radius)
    background = lorentzian_background(det, gamma=family.background_gamma)
    patterns = finish_patterns(signal, detector=det, background=background,
                               background_fraction=family.background_fraction, dose=dose, rng=seed)
    oy, ox = det.origin
    row, col = ky / det.k_step + oy, kx / det.k_step + ox
    totals = signal.sum(axis=(1, 2))[:, None]
    counts = dose * (1 - family.background_fraction) * intensity / totals
    near_r = np.clip(np.round(row).astype(int), 0, SHAPE[0] - 1)
    near_c = np.clip(np.round(col).astype(int), 0, SHAPE[1] - 1)
    background_px = dose * family.background_fraction * background[near_r, near_c]
    disk_pixels = np.pi * (family.radius / det.k_step) ** 2
    snr = (counts / disk_pixels) / np.sqrt(np.maximum(background_px, 1.0))
    real = intensity > 0
    nan = lambda a: np.where(real, a, np.nan)  # noqa: E731
    return {
        "patterns": patterns,
        "truth_row": nan(row), "truth_col": nan(col), "truth_counts": nan(counts),
        "truth_background": nan(background_px), "truth_snr": nan(snr),
    }


def vacuum_probe(family: Family, dose: float, seed: int) -> np.ndarray:
    """The direct beam alone at k = 0 (no specimen, no background), summed over ``PROBE_FRAMES`` frames."""
    det = family.detector
    beam = render_disks(np.zeros((1, 1)), np.zeros((1, 1)), np.ones((1, 1)), detector=det, radius=family.radius)
    probe = finish_patterns(beam, detector=det, dose=dose * PROBE_FRAMES, rng=seed)
    return probe[0]


def make_family(family: Family, n: int, doses: tuple[float, ...], out: Path, seed: int) -> None:
    """Draw ``n`` patterns' reflections once and render them at every dose."""
    rng = np.random.default_rng(seed)
    draw = random_lattice_spots if family.name == "lattice" else crystal_spots
    kx, ky, intensity = keep_on_detector(*draw(n, rng), family)
    shift = rng.uniform(-BEAM_SHIFT, BEAM_SHIFT, (2, n, 1))
    kx, ky = kx + shift[0], ky + shift[1]
    det = family.detector
    for k, dose in enumerate(doses):
        arrays = render(family, kx, ky, intensity, dose, seed=seed + 1 + k)
        arrays["probe"] = vacuum_probe(family, dose, seed=seed + 100 + k)
        scalars = dict(k_step=det.k_step, origin_row=det.origin[0], origin_col=det.origin[1],
                       radius_px=family.radius / det.k_step, dose=dose)
        path = out / f"{family.name}_dose{dose:.0e}.npz"
        np.savez(path, **arrays, **{key: np.float64(v) for key, v in scalars.items()}, family=family.name)
        snr = arrays["truth_snr"][:, 1:]
        print(f"{path.name}: {n} patterns, {np.sum(snr >= 5) / n:.1f} reflections/pattern >= 5 sigma per pixel, "
              f"{np.sum(np.isfinite(snr)) / n:.1f} on the detector; radius {family.radius / det.k_step:.2f} px")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="patterns per dose")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for index, family in enumerate((lattice_family(), crystal_family())):
        make_family(family, args.n, DOSES, args.out, seed=args.seed + 1000 * index)


if __name__ == "__main__":
    main()
