"""Shared helpers of the multislice orientation test set (stemkit's environment only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stemkit.physics import crystal as preset_crystal
from stemkit.physics.specimens import MIN_FRACTION, Optics

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
#: the detector and optics of the thick polycrystal of benchmarks/orientation/dynamical.py
#: (stemkit.orientation.publish.THICK_DYNAMICAL with polycrystal's defaults): 300 keV, 1 mrad, 128 x 128
#: pixels of 0.025 1/Å, PSF 0.5 px, 5 % Lorentzian background (0.4 1/Å), 1e5 electrons per pattern
OPTICS = Optics()
DOSE = 1e5
#: diffraction="bloch" in the same polycrystal: 128 beams, proportional absorption 0.05
BLOCH_OPTICS = Optics(diffraction="bloch")
DETECTOR_PIXEL = OPTICS.k_step


def load_cases(data: Path = DATA) -> dict:
    return json.loads((data / "cases.json").read_text())


def load_spots(data: Path, names: list[str], tag: str | None = None) -> dict[str, dict]:
    """The abTEM spot files that exist, by case name."""
    folder = data / ("spots" if tag is None else f"spots-{tag}")
    spots = {}
    for name in names:
        path = folder / f"{name}.npz"
        if path.is_file():
            with np.load(path) as f:
                spots[name] = {key: f[key] for key in f.files}
    return spots


def crystal_of(name: str):
    return preset_crystal(name)


def padded_tables(tables: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """Spot tables (direct beam first) padded to one width with zero intensity; spots below MIN_FRACTION dropped."""
    width = max(len(t[0]) for t in tables)
    kx, ky, fraction = (np.zeros((len(tables), width)) for _ in range(3))
    for row, (x, y, f) in enumerate(tables):
        keep = f > MIN_FRACTION
        keep[0] = True  # the direct beam
        n = int(keep.sum())
        kx[row, :n], ky[row, :n], fraction[row, :n] = x[keep], y[keep], f[keep]
    return kx, ky, fraction
