"""Calibrating the training augmentation against the real peak finder.

:func:`compare_with_peak_finder` renders polycrystals (:func:`stemkit.physics.specimens.polycrystal`)
at several doses, finds their peaks with :func:`stemkit.find_peaks`, and simulates the same
orientations, phases, thicknesses and doses with :mod:`stemkit.orientation.simulate` on the
same detector; the nuisance parameters the specimen does not fix (background level,
threshold, intensity spread, false-peak rate, ...) are drawn from the training ranges.
Both sides are summarised by the same statistics:

- disks per pattern (the direct beam excluded): median and 10-90 % range;
- ``log(I_min / I_max)`` within a pattern, median (the dynamic range the tokens span);
- position error against the true spot positions, in pixels (median, 90th percentile),
  the residual centring error included;
- false peaks per pattern (found peaks with no true spot within 1.2 px);
- the expected counts at which half of the true disks are found (the detection limit);
- the scatter (standard deviation) of ``log(I / N)`` for disks of more than 1000 expected
  counts ``N`` (the training data add a log-normal factor for dynamical effects on purpose).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from stemkit.physics.presets import crystal as preset_crystal
from stemkit.physics.rotations import quaternion_to_matrix
from stemkit.physics.specimens import Optics, polycrystal, spot_patterns
from stemkit.orientation.simulate import Augmentation, Conditions, Spots, degrade, kinematic_spots
from stemkit.orientation.tokens import BEAM_EXCLUSION

MATCH_PX = 1.2


@dataclass
class PeakStatistics:
    """Summary of a set of patterns' peaks (see the module docstring)."""

    disks_median: float
    disks_p10: float
    disks_p90: float
    log_range_median: float
    position_error_px_median: float
    position_error_px_p90: float
    false_per_pattern: float
    detection_counts_50: float
    log_intensity_scatter: float

    def row(self) -> str:
        """A Markdown table row of the numbers."""
        return (f"{self.disks_median:.0f} ({self.disks_p10:.0f}-{self.disks_p90:.0f}) | {self.log_range_median:.1f} | "
                f"{self.position_error_px_median:.2f} / {self.position_error_px_p90:.2f} | "
                f"{self.false_per_pattern:.2f} | {self.detection_counts_50:.0f} | {self.log_intensity_scatter:.2f}")


def summarise(found_kx, found_ky, found_intensity, found_valid, true_kx, true_ky, expected, *, k_step: float,
              probe_radius: float) -> PeakStatistics:
    """Statistics of found peaks ``(n, P)`` against the true spots ``(n, Q)`` (expected counts, 0 = no spot)."""
    k = np.hypot(found_kx, found_ky)
    found = np.asarray(found_valid, bool) & (k > BEAM_EXCLUSION * probe_radius)
    disks = found.sum(axis=1)
    errors, false, hit_counts, miss_counts, ranges, scatter = [], 0, [], [], [], []
    for i in range(found.shape[0]):
        fx, fy, fi = found_kx[i][found[i]], found_ky[i][found[i]], found_intensity[i][found[i]]
        real = expected[i] > 0
        tx, ty, te = true_kx[i][real], true_ky[i][real], expected[i][real]
        if fi.size > 1 and (fi > 0).sum() > 1:
            positive = fi[fi > 0]
            ranges.append(np.log(positive.min() / positive.max()))
        if tx.size == 0:
            false += fx.size
            continue
        distance = np.hypot(fx[:, None] - tx[None], fy[:, None] - ty[None]) / k_step
        matched = distance.min(axis=1) < MATCH_PX if fx.size else np.zeros(0, bool)
        false += int((~matched).sum())
        errors += list(distance.min(axis=1)[matched])
        nearest = te[distance.argmin(axis=1)] if fx.size else np.zeros(0)
        bright = matched & (nearest > 1000) & (fi > 0)
        scatter += list(np.log(fi[bright] / nearest[bright]))
        seen = (distance.min(axis=0) < MATCH_PX) if fx.size else np.zeros(tx.size, bool)
        hit_counts += list(te[seen])
        miss_counts += list(te[~seen])
    errors = np.asarray(errors) if errors else np.full(1, np.nan)
    return PeakStatistics(
        disks_median=float(np.median(disks)), disks_p10=float(np.percentile(disks, 10)),
        disks_p90=float(np.percentile(disks, 90)), log_range_median=float(np.median(ranges)) if ranges else np.nan,
        position_error_px_median=float(np.median(errors)), position_error_px_p90=float(np.percentile(errors, 90)),
        false_per_pattern=false / found.shape[0],
        detection_counts_50=_half_detection(np.asarray(hit_counts), np.asarray(miss_counts)),
        log_intensity_scatter=float(np.std(scatter)) if scatter else np.nan,
    )


def _half_detection(hit: np.ndarray, miss: np.ndarray) -> float:
    """Expected counts where the detected share crosses 50 % (log-spaced bins)."""
    edges = np.geomspace(1.0, 1e5, 41)
    for low, high in zip(edges[:-1], edges[1:]):
        h = ((hit >= low) & (hit < high)).sum()
        m = ((miss >= low) & (miss < high)).sum()
        if h + m >= 5 and h >= m:
            return float(np.sqrt(low * high))
    return np.nan


def compare_with_peak_finder(
    phases: tuple[str, ...] = ("Cu", "Cu2O"),
    doses: tuple[float, ...] = (1e4, 1e5, 1e6),
    *,
    scan_shape: tuple[int, int] = (16, 16),
    n_grains: int = 64,
    seed: int = 0,
    augmentation: Augmentation = Augmentation(),
) -> list[tuple[float, PeakStatistics, PeakStatistics]]:
    """``(dose, found by find_peaks, simulated)`` for each dose (see the module docstring)."""
    from stemkit.preprocess import find_peaks

    rows = []
    for dose in doses:
        specimen = polycrystal(phases, scan_shape=scan_shape, n_grains=n_grains, dose=dose, seed=seed)
        peaks = find_peaks(specimen.intensity)
        optics = Optics(beam_energy_kev=specimen.intensity.attrs["beam_energy_kev"])
        truth = _specimen_truth(specimen, phases)
        n_pixels = truth.phase.size
        radius = float(peaks.attrs["probe_radius"])
        true_kx, true_ky, fraction = _true_spots(phases, truth, optics)
        flat = {v: peaks[v].values.reshape(n_pixels, -1) for v in ("kx", "ky", "intensity", "valid")}
        found = summarise(flat["kx"], flat["ky"], flat["intensity"], flat["valid"], true_kx, true_ky, fraction * dose,
                          k_step=optics.k_step, probe_radius=radius)
        rows.append((dose, found, _simulated(phases, truth, optics, radius, seed, augmentation)))
    return rows


def _specimen_truth(specimen, phases: tuple[str, ...]) -> Conditions:
    names = specimen["phase"].values.reshape(-1)
    quaternions = specimen["quaternion"].values.reshape(-1, 4)
    return Conditions(
        phase=np.array([list(phases).index(name) for name in names]), rotations=quaternion_to_matrix(quaternions),
        beam_energy_kev=np.full(len(names), float(specimen.intensity.attrs["beam_energy_kev"])),
        thickness_nm=specimen["thickness"].values.reshape(-1),
        dose=np.full(len(names), float(specimen.intensity.attrs["dose_electrons"])),
    )


def _true_spots(phases: tuple[str, ...], truth: Conditions, optics: Optics):
    """The specimen's own spots (its generator's simulation, all reflections), without the direct beam."""
    n = truth.phase.size
    columns = []
    for index, name in enumerate(phases):
        members = np.flatnonzero(truth.phase == index)
        if members.size:
            columns.append((members, *spot_patterns(preset_crystal(name), truth.rotations[members],
                                                     truth.thickness_nm[members], optics)))
    width = max(c[1].shape[1] for c in columns) - 1
    kx, ky, fraction = np.zeros((n, width)), np.zeros((n, width)), np.zeros((n, width))
    for members, skx, sky, sfr in columns:
        used = skx.shape[1] - 1
        kx[members, :used], ky[members, :used], fraction[members, :used] = skx[:, 1:], sky[:, 1:], sfr[:, 1:]
    return kx, ky, fraction


def _simulated(phases, truth: Conditions, optics: Optics, radius: float, seed: int,
               augmentation: Augmentation) -> PeakStatistics:
    """The training simulation of the specimen's pixels, on its detector."""
    edge = np.ceil(radius / optics.k_step) * optics.k_step
    half_width = optics.pattern_size // 2 * optics.k_step - edge
    pinned = replace(augmentation, k_step=(optics.k_step, optics.k_step), probe_radius=(radius, radius),
                     detector_half_width=(half_width, half_width), detector_offset=0.0)
    crystals = [preset_crystal(p) for p in phases]
    spots: Spots = kinematic_spots(crystals, truth, pinned.s_max, pinned.max_tokens + 16)
    seen = degrade(spots, truth.dose, np.random.default_rng(seed), pinned)
    return summarise(seen.kx, seen.ky, seen.counts, seen.valid, seen.clean_kx[:, :spots.kx.shape[1]],
                     seen.clean_ky[:, :spots.kx.shape[1]], seen.expected[:, :spots.kx.shape[1]],
                     k_step=optics.k_step, probe_radius=radius)


def format_table(rows: list[tuple[float, PeakStatistics, PeakStatistics]]) -> str:
    """The comparison as a Markdown table."""
    lines = [
        "| dose (e⁻/pattern) | source | disks/pattern median (p10-p90) | log(I_min/I_max) median | "
        "position error px median / p90 | false peaks/pattern | counts at 50 % detection | "
        "std log(I/N), N > 1000 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dose, found, simulated in rows:
        lines.append(f"| {dose:.0e} | find_peaks on polycrystal | {found.row()} |")
        lines.append(f"| {dose:.0e} | simulated training tokens | {simulated.row()} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - a report, run by hand
    print(format_table(compare_with_peak_finder()))
