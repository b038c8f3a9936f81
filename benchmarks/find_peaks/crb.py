"""The shot-noise (Cramér–Rao) bound on the position error of the benchmark's reflections (numpy only).

For a disk of ``N`` expected counts with the shape ``T`` of the vacuum probe (unit sum) on a
background of ``B`` counts per pixel, the expected image is ``μ(p) = N·T(p − c) + B`` and the
Fisher information on the centre ``c`` under Poisson noise is
``I_jj = Σ_p (N ∂T/∂p_j)² / μ(p)``. No unbiased estimator has a smaller variance than
``1 / I_jj`` per axis, so ``sqrt(1/I_yy + 1/I_xx)`` bounds the expected distance error of
each reflection; its RMS over the reflections that ``matching.score`` scores in an SNR
class is the floor under that class's position RMS. (The amplitude and the background are
taken as known, and neighbouring disks are ignored, so the true floor is a little higher.)

Run: ``.venv/bin/python benchmarks/find_peaks/crb.py [--data DIR]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from matching import SNR_CLASSES, Truth

HERE = Path(__file__).resolve().parent


def probe_gradients(probe: np.ndarray, half: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit-sum probe and its row and column derivatives (band-limited), cut to ``2 half + 1`` px around its centroid."""
    t = np.clip(probe.astype(float), 0, None)
    t /= t.sum()
    rows, cols = np.indices(t.shape)
    centre = np.round([(t * rows).sum(), (t * cols).sum()]).astype(int)
    spectrum = np.fft.fft2(t)
    ky = np.fft.fftfreq(t.shape[0])[:, None]
    kx = np.fft.fftfreq(t.shape[1])[None, :]
    gy = np.fft.ifft2(2j * np.pi * ky * spectrum).real
    gx = np.fft.ifft2(2j * np.pi * kx * spectrum).real
    window = (slice(centre[0] - half, centre[0] + half + 1), slice(centre[1] - half, centre[1] + half + 1))
    return t[window], gy[window], gx[window]


def position_bound(path: Path) -> dict[float, float]:
    """RMS of the per-reflection Cramér–Rao bound (px) over the scored reflections of each SNR class."""
    truth = Truth.load(path)
    with np.load(path) as f:
        t, gy, gx = probe_gradients(f["probe"])
    scored, snr = truth.scored(), np.nan_to_num(truth.snr, nan=0.0)
    out = {}
    for level in SNR_CLASSES:
        chosen = scored & (snr >= level)
        counts = truth.counts[chosen][:, None, None]
        mu = counts * t + np.maximum(truth.background[chosen], 1e-3)[:, None, None]
        info_y = (counts**2 * gy**2 / mu).sum(axis=(1, 2))
        info_x = (counts**2 * gx**2 / mu).sum(axis=(1, 2))
        out[level] = float(np.sqrt(np.mean(1 / info_y + 1 / info_x))) if chosen.any() else float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE / "data")
    args = parser.parse_args()
    print("| data | " + " | ".join(f"bound, SNR ≥ {level:g} (px)" for level in SNR_CLASSES) + " |")
    print("|---" * (len(SNR_CLASSES) + 1) + "|")
    for path in sorted(args.data.glob("*_dose*.npz")):
        bound = position_bound(path)
        print(f"| {path.stem} | " + " | ".join(f"{bound[level]:.3f}" for level in SNR_CLASSES) + " |")


if __name__ == "__main__":
    main()
