"""The physical reading of a split: lattice strain and rotation between sibling mean patterns.

The Bragg disks of every node's summed pattern are found with
:func:`stemkit.preprocess.find_peaks` (positions relative to the direct beam). For two
nodes A and B, the disks are matched without knowing the crystal:

1. every pair of an inner disk of A and an inner disk of B proposes a rotation and scale
   that takes one onto the other; the proposal that brings most disks of A onto disks of B
   wins, and among proposals within 10 % of the most, the smallest rotation (a hexagonal
   lattice matches itself every 60°: the reading is the smallest rotation consistent with
   the lattice's symmetry);
2. a linear map ``g_B = M g_A`` is fitted by least squares to the matched disks, and the
   matching is repeated with it, three times with a tightening tolerance.

With ``M = F⁻ᵀ`` (DESIGN.md: ``g' = F⁻ᵀ g``), ``F`` is B's lattice relative to A's, and
:func:`stemkit.physics.specimens.strain_from_deformation` gives ``exx, eyy, exy`` (``V − I``)
and the rotation (degrees, right-handed about the beam). A node whose pattern holds fewer
than ``min_peaks`` disks that index as one lattice (:func:`lattice_disks`) has no lattice
(vacuum, amorphous; summed vacuum patterns show faint rings of spots around the beam) and
gets no reading, with a status that says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from stemkit.physics.specimens import strain_from_deformation
from stemkit.preprocess import find_peaks

READING_FIELDS = ("exx", "eyy", "exy", "rotation")
INNER_PEAKS = 12
MAX_STRAIN = 0.15
REFINE_ROUNDS = 3


@dataclass(frozen=True)
class Peaks:
    """Bragg disks of one pattern, direct beam excluded: positions ``(n, 2)`` as (kx, ky) in 1/Å, and intensities."""

    k: np.ndarray
    intensity: np.ndarray


@dataclass(frozen=True)
class Reading:
    """Lattice of node B relative to node A."""

    exx: float
    eyy: float
    exy: float
    rotation: float
    n_matched: int
    residual: float
    status: str
    deformation: np.ndarray


NO_READING = dict(exx=np.nan, eyy=np.nan, exy=np.nan, rotation=np.nan, n_matched=0, residual=np.nan)


def pattern_peaks(patterns: np.ndarray, like: xr.DataArray, *, threshold: float, noise: str,
                  max_peaks: int = 96) -> tuple[list[Peaks], float]:
    """The Bragg disks of every pattern of ``patterns`` ``(n, ky, kx)`` on the detector of ``like``.

    Returns the peaks of each pattern (direct beam removed) and the probe radius (1/Å).
    """
    n = patterns.shape[0]
    cube = xr.DataArray(
        patterns[None].astype(np.float32),
        dims=("scan_y", "scan_x", "ky", "kx"),
        coords={"scan_y": [0.0], "scan_x": np.arange(n, dtype=float), "ky": like.ky, "kx": like.kx},
        attrs={"beam_energy_kev": like.attrs.get("beam_energy_kev", 300.0)},
    )
    found = find_peaks(cube, threshold=threshold, noise=noise, max_peaks=max_peaks)
    radius = float(found.attrs["probe_radius"])
    out = []
    for i in range(n):
        p = found.isel(scan_y=0, scan_x=i)
        valid = p.valid.values
        k = np.stack([p.kx.values[valid], p.ky.values[valid]], axis=1).astype(np.float64)
        intensity = p.intensity.values[valid].astype(np.float64)
        off_axis = np.hypot(k[:, 0], k[:, 1]) > 2 * radius
        out.append(Peaks(k[off_axis], intensity[off_axis]))
    return out, radius


def lattice_disks(peaks: Peaks, *, tolerance: float = 0.08) -> int:
    """How many disks index as integer combinations of the two shortest non-collinear disk vectors.

    A lattice indexes (nearly) all its disks; a ring of spots at one radius, stray maxima or
    noise (as in vacuum) index only the two basis vectors and their opposites. ``tolerance``
    is the largest misfit as a fraction of the shortest vector's length.
    """
    if len(peaks.k) < 2:
        return len(peaks.k)
    order = np.argsort(np.hypot(*peaks.k.T))
    k = peaks.k[order]
    a = k[0]
    lengths = np.hypot(*k.T)
    sines = np.abs(a[0] * k[:, 1] - a[1] * k[:, 0]) / (lengths * lengths[0])
    candidates = np.flatnonzero(sines > np.sin(np.deg2rad(20)))
    if not len(candidates):
        return 1
    basis = np.stack([a, k[candidates[0]]], axis=1)
    indices = np.linalg.solve(basis, k.T).T
    misfit = np.hypot(*((indices - np.round(indices)) @ basis.T).T)
    indexed = misfit < tolerance * lengths[0]
    higher_order = np.abs(np.round(indices[indexed])).sum(axis=1) >= 2
    return int(indexed.sum()) if higher_order.any() else min(int(indexed.sum()), 4)


def _nearest(moved: np.ndarray, target: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j): target j is the nearest to moved i, within tolerance, and i the nearest to j."""
    distance = np.linalg.norm(moved[:, None] - target[None], axis=-1)
    j = distance.argmin(axis=1)
    i = np.arange(len(moved))
    mutual = distance.argmin(axis=0)[j] == i
    keep = (distance[i, j] < tolerance) & mutual
    return i[keep], j[keep]


def _rotation_scale(theta: float, scale: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return scale * np.array([[c, -s], [s, c]])


def _initial_map(a: np.ndarray, b: np.ndarray, tolerance: float) -> np.ndarray:
    """The rotation-and-scale that matches most disks (smallest rotation among near-best)."""
    inner_a = a[np.argsort(np.hypot(*a.T))[:INNER_PEAKS]]
    inner_b = b[np.argsort(np.hypot(*b.T))[:INNER_PEAKS]]
    proposals = []
    for p in inner_a:
        for q in inner_b:
            scale = np.hypot(*q) / np.hypot(*p)
            if abs(scale - 1) > MAX_STRAIN:
                continue
            theta = np.angle(complex(*q)) - np.angle(complex(*p))
            theta = (theta + np.pi) % (2 * np.pi) - np.pi
            m = _rotation_scale(theta, scale)
            count = len(_nearest(a @ m.T, b, tolerance)[0])
            proposals.append((count, abs(theta), m))
    if not proposals:
        return np.eye(2)
    most = max(p[0] for p in proposals)
    near_best = [p for p in proposals if p[0] >= 0.9 * most]
    return min(near_best, key=lambda p: (p[1], -p[0]))[2]


def relative_lattice(a: Peaks, b: Peaks, *, pixel: float, min_peaks: int = 6) -> Reading:
    """Strain and rotation of B's lattice relative to A's, from their Bragg disks.

    Parameters
    ----------
    a, b
        Disks of the two patterns (direct beam excluded).
    pixel
        Detector pixel size (1/Å): the final matching tolerance is 1.5 pixels.
    min_peaks
        Fewest disks (and matched pairs) for a reading.
    """
    for name, peaks in (("A", a), ("B", b)):
        indexed = lattice_disks(peaks)
        if indexed < min_peaks:
            return Reading(**NO_READING, status=f"no lattice in {name}: {indexed} of {len(peaks.k)} disks besides "
                           f"the direct beam index as a lattice (< {min_peaks}; vacuum or amorphous?)",
                           deformation=np.full((2, 2), np.nan))
    g_min = float(np.hypot(*a.k.T).min())
    tolerance = max(3 * pixel, 0.15 * g_min)
    m = _initial_map(a.k, b.k, tolerance)
    for round_ in range(REFINE_ROUNDS):
        tolerance = max(1.5 * pixel, tolerance / 2) if round_ else tolerance
        i, j = _nearest(a.k @ m.T, b.k, tolerance)
        if len(i) < min_peaks:
            return Reading(**NO_READING | {"n_matched": len(i)},
                           status=f"only {len(i)} disks match between the two patterns (< {min_peaks})",
                           deformation=np.full((2, 2), np.nan))
        weights = np.sqrt(np.sqrt(np.clip(np.minimum(a.intensity[i], b.intensity[j]), 0, None)))[:, None]
        m = np.linalg.lstsq(a.k[i] * weights, b.k[j] * weights, rcond=None)[0].T
    residual = float(np.sqrt(np.mean(np.sum((a.k[i] @ m.T - b.k[j]) ** 2, axis=1))))
    deformation = np.linalg.inv(m).T  # M = F⁻ᵀ
    exx, eyy, exy, rotation = (float(v) for v in strain_from_deformation(deformation))
    return Reading(exx, eyy, exy, rotation, int(len(i)), residual, "ok", deformation)


def split_readings(tree, means: xr.DataArray, *, threshold: float = 5.0, noise: str = "poisson",
                   min_peaks: int = 6) -> xr.Dataset:
    """The reading of every non-root node against the reference child of its parent.

    The reference child of a split is its largest leaf child with a lattice (a child that
    was split further mixes several kinds of pattern), else its largest child with a
    lattice. Readings are
    found from the summed patterns (``means × size``, counts for counted data).

    Returns
    -------
    xarray.Dataset
        On dim ``node``: ``reference`` (node id, -1 for none), ``exx``, ``eyy``, ``exy``,
        ``rotation`` (degrees), ``n_matched``, ``residual`` (RMS, 1/Å), ``n_disks`` (Bragg
        disks in the node's pattern) and ``status``; NaN and a status saying why where there
        is no reading (the root, nodes without a lattice).
    """
    sizes = np.array([node.size for node in tree.nodes], dtype=np.float64)
    sums = means.values * sizes[:, None, None]
    peaks, _ = pattern_peaks(sums, means, threshold=threshold, noise=noise)
    pixel = float(abs(means.kx.values[1] - means.kx.values[0]))
    indexed = [lattice_disks(p) for p in peaks]
    n = len(tree.nodes)
    table = {name: np.full(n, np.nan) for name in (*READING_FIELDS, "residual")}
    table["n_matched"] = np.zeros(n, dtype=np.int64)
    reference = np.full(n, -1, dtype=np.int64)
    status = np.array(["root: nothing to compare with"] + [""] * (n - 1), dtype=object)
    for parent in tree.nodes:
        if not parent.children:
            continue
        with_lattice = [c for c in parent.children if indexed[c] >= min_peaks]
        if not with_lattice:
            for c in parent.children:
                status[c] = (f"no lattice in any child of node {parent.id} ({indexed[c]} of {len(peaks[c].k)} "
                             "disks here index as a lattice)")
            continue
        # a child that was split further holds several kinds of pattern: prefer a leaf
        ref = max(with_lattice, key=lambda c: (tree.nodes[c].is_leaf, tree.nodes[c].size, -c))
        for c in parent.children:
            reference[c] = ref
            if c == ref:
                status[c] = "reference of this split"
                for name in READING_FIELDS:
                    table[name][c] = 0.0
                continue
            reading = relative_lattice(peaks[ref], peaks[c], pixel=pixel, min_peaks=min_peaks)
            for name in (*READING_FIELDS, "residual", "n_matched"):
                table[name][c] = getattr(reading, name)
            status[c] = reading.status
    units = {"exx": "1", "eyy": "1", "exy": "1", "rotation": "degree", "residual": "1/Å"}
    variables = {name: ("node", values, {"units": units[name]} if name in units else {}) for name, values in table.items()}
    variables["reference"] = ("node", reference, {"long_name": "node the reading is relative to"})
    variables["n_disks"] = ("node", np.array([len(p.k) for p in peaks]), {"long_name": "Bragg disks besides the beam"})
    variables["n_lattice_disks"] = ("node", np.array(indexed), {"long_name": "disks that index as one lattice"})
    variables["status"] = ("node", status.astype(str))
    return xr.Dataset(variables, coords={"node": np.arange(n)},
                      attrs={"convention": "F = V R relative to the reference sibling; g' = F^-T g; V - I; degrees"})
