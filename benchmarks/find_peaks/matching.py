"""Scoring found Bragg peaks against the simulator's ground truth (numpy only: runs in either venv).

One rule for every method, in absolute detector pixels:

- a found peak and a true reflection match when they lie within ``tolerance`` pixels,
  half a disk radius + 1 px (the rule of ``tests/preprocess/test_peaks.py``); pairs are
  made one-to-one, closest first, so a second peak on the same disk is a duplicate;
- found peaks may match any *real* reflection: one whose disk holds at least one
  standard deviation of the background noise under it (expected signal counts
  >= sqrt(max(background counts under the disk, 1))); a peak on a weaker reflection
  is indistinguishable from noise and counts as false, as does every unmatched peak;
- recall is counted over the Bragg reflections (not the direct beam) with per-pixel SNR
  >= 5 whose centre lies at least ``ceil(radius) + 1`` px inside the detector and whose
  disk does not overlap a stronger reflection's (centres closer than a disk diameter);
- position errors are the distances of the matched pairs of those same reflections,
  per SNR class; the direct beam's error is reported apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SNR_RECALL = 5.0
SNR_CLASSES = (5.0, 10.0)


@dataclass
class Truth:
    """Per-reflection ground truth of one npz file; index 0 of each pattern is the direct beam."""

    row: np.ndarray
    col: np.ndarray
    counts: np.ndarray
    background: np.ndarray
    snr: np.ndarray
    radius_px: float
    shape: tuple[int, int]

    @classmethod
    def load(cls, path) -> "Truth":
        """Read the truth arrays written by ``make_data.py``."""
        with np.load(path) as f:
            return cls(f["truth_row"], f["truth_col"], f["truth_counts"], f["truth_background"], f["truth_snr"],
                       float(f["radius_px"]), tuple(f["patterns"].shape[1:]))

    @property
    def tolerance(self) -> float:
        """Matching distance in pixels: half a disk radius + 1 px."""
        return 0.5 * self.radius_px + 1.0

    def real(self) -> np.ndarray:
        """Reflections a peak may legitimately match: signal >= 1 sigma of the background under the disk."""
        disk_background = self.background * np.pi * self.radius_px**2
        with np.errstate(invalid="ignore"):
            return np.isfinite(self.row) & (self.counts >= np.sqrt(np.maximum(disk_background, 1.0)))

    def scored(self) -> np.ndarray:
        """Bragg reflections eligible for recall and position error (any SNR): inside, not overlapped, not the beam."""
        margin = np.ceil(self.radius_px) + 1
        rows, cols = self.shape
        with np.errstate(invalid="ignore"):
            inside = (self.row >= margin) & (self.row <= rows - 1 - margin) & (self.col >= margin) & (self.col <= cols - 1 - margin)
        inside[:, 0] = False
        return inside & ~self._overlapped()

    def _overlapped(self) -> np.ndarray:
        """True where a stronger reflection's centre lies within one disk diameter."""
        out = np.zeros(self.row.shape, dtype=bool)
        diameter = 2 * self.radius_px
        counts = np.nan_to_num(self.counts, nan=-1.0)
        for i in range(self.row.shape[0]):
            ok = np.flatnonzero(np.isfinite(self.row[i]))
            r, c, n = self.row[i, ok], self.col[i, ok], counts[i, ok]
            d = np.hypot(r[:, None] - r[None, :], c[:, None] - c[None, :])
            out[i, ok] = ((d < diameter) & (n[None, :] > n[:, None])).any(axis=1)
        return out


def match_pattern(found: np.ndarray, truth: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching, closest pairs first.

    Parameters
    ----------
    found, truth
        ``(k, 2)`` and ``(m, 2)`` pixel positions (row, col).
    tolerance
        Largest distance of a match, in pixels.

    Returns
    -------
    partner, distance
        For each true reflection, the index of its found peak (-1 if none) and the distance (NaN if none).
    """
    partner = np.full(len(truth), -1)
    distance = np.full(len(truth), np.nan)
    if len(found) == 0 or len(truth) == 0:
        return partner, distance
    d = np.hypot(found[:, None, 0] - truth[None, :, 0], found[:, None, 1] - truth[None, :, 1])
    pf, pt = np.nonzero(d <= tolerance)
    taken = np.zeros(len(found), dtype=bool)
    for index in np.argsort(d[pf, pt], kind="stable"):
        f, t = pf[index], pt[index]
        if not taken[f] and partner[t] < 0:
            taken[f], partner[t], distance[t] = True, f, d[f, t]
    return partner, distance


@dataclass
class Scores:
    """Accuracy of one method on one data file."""

    recall: float
    n_recall: int
    rms: dict[float, float]
    n_rms: dict[float, int]
    beam_rms: float
    false_positives: float
    peaks_per_pattern: float


def score(found_row: np.ndarray, found_col: np.ndarray, truth: Truth) -> Scores:
    """Match every pattern's peaks (``(n, k)`` absolute pixels, NaN-padded) to the truth and summarise."""
    real, scored = truth.real(), truth.scored()
    found_any = np.zeros(truth.row.shape, dtype=bool)
    error = np.full(truth.row.shape, np.nan)
    false_positives = n_found = 0
    for i in range(truth.row.shape[0]):
        keep = np.isfinite(found_row[i]) & np.isfinite(found_col[i])
        found = np.stack([found_row[i, keep], found_col[i, keep]], axis=1)
        candidates = np.flatnonzero(real[i])
        partner, distance = match_pattern(found, np.stack([truth.row[i, candidates], truth.col[i, candidates]], 1), truth.tolerance)
        found_any[i, candidates] = partner >= 0
        error[i, candidates] = distance
        n_found += len(found)
        false_positives += len(found) - int((partner >= 0).sum())
    snr = np.nan_to_num(truth.snr, nan=0.0)
    recall_set = scored & (snr >= SNR_RECALL)
    rms, n_rms = {}, {}
    for level in SNR_CLASSES:
        errors = error[scored & (snr >= level) & found_any]
        rms[level], n_rms[level] = _rms(errors), errors.size
    n = truth.row.shape[0]
    return Scores(
        recall=float(found_any[recall_set].mean()) if recall_set.any() else float("nan"),
        n_recall=int(recall_set.sum()),
        rms=rms,
        n_rms=n_rms,
        beam_rms=_rms(error[:, 0][found_any[:, 0]]),
        false_positives=false_positives / n,
        peaks_per_pattern=n_found / n,
    )


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(values**2))) if values.size else float("nan")
