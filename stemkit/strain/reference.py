"""The reference lattice of a strain map: chosen by a documented rule, or given as a map.

Strain is always relative to some lattice. stemkit's rule (``reference="auto"``):

1. the *dominant group* is the most common base (CC-ST-AE) or lattice (lattice fit)
   among patterns with a measurement;
2. every window of ``w × w`` probe positions (``w`` = a quarter of the shorter scan side,
   at least 3 and at most 16) made only of such patterns is scored by the summed local
   variance of the four components of its deformation gradients;
3. the reference is the window of least variance — the most uniform region of the
   dominant group — and its lattice is the component-wise median ``F`` there.

The reference's own noise is an offset on every pixel of the map, so the window is large:
on the 70 %-background film of ``benchmarks/strain`` (64 × 64 scan) the MAE of exx over
every possible 8 × 8 reference window ranged up to 0.00095, over 16 × 16 windows up to
0.00082, for a per-pattern MAE of 0.00072 (an eighth of the side was the rule before).

Given a boolean map instead, the median over the ``True`` positions is the reference.
Before the median, every ``F`` is brought onto one symmetry branch
(:func:`stemkit.strain.symmetry.align_branch`), and afterwards the rotation is wrapped
into ``(−180°/n, 180°/n]`` of the lattice's own ``n``-fold symmetry.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from scipy import ndimage

from stemkit.strain.polar import polar_strain, relative_deformation
from stemkit.strain.symmetry import align_branch, branch_centre, wrap_rotation

MIN_WINDOW, MAX_WINDOW = 3, 16


def reference_window(scan_shape: tuple[int, int]) -> int:
    """Side ``w`` of the automatic reference window for a scan of ``scan_shape``."""
    return int(np.clip(round(min(scan_shape) / 4), MIN_WINDOW, MAX_WINDOW))


def automatic_reference(deformation: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The boolean map of the most uniform ``w × w`` window of the dominant group (module rule).

    Parameters
    ----------
    deformation
        ``(n_y, n_x, 2, 2)`` deformation gradients, NaN where nothing was measured, all on
        one symmetry branch.
    groups
        ``(n_y, n_x)`` integer group (base) of each pattern.
    """
    finite = np.all(np.isfinite(deformation), axis=(-2, -1))
    if not finite.any():
        raise ValueError("no pattern has a strain measurement, so no reference can be chosen; check the data.")
    dominant = np.bincount(groups[finite].astype(np.int64)).argmax()
    member = finite & (groups == dominant)
    w = min(reference_window(member.shape), *member.shape)
    values = np.where(member[..., None], deformation.reshape(*member.shape, 4), 0.0)
    score = np.zeros(member.shape)
    for c in range(4):
        mean = ndimage.uniform_filter(values[..., c], w, mode="constant")
        square = ndimage.uniform_filter(values[..., c] ** 2, w, mode="constant")
        score += square - mean**2
    full = ndimage.uniform_filter(member.astype(float), w, mode="constant") > 1 - 1e-9
    if not full.any():
        return member
    y, x = np.unravel_index(np.argmin(np.where(full, score, np.inf)), score.shape)
    mask = np.zeros(member.shape, bool)
    y0, x0 = y - w // 2, x - w // 2  # uniform_filter's window at i spans [i - w // 2, i - w // 2 + w)
    mask[y0:y0 + w, x0:x0 + w] = True
    return mask & member


def as_reference_mask(reference: Any, scan_shape: tuple[int, int]) -> np.ndarray | None:
    """``None`` for ``"auto"``; otherwise the given boolean map, checked."""
    if isinstance(reference, str):
        if reference != "auto":
            raise ValueError(f"reference must be 'auto' or a boolean map of the scan; got {reference!r}.")
        return None
    mask = np.asarray(reference.values if isinstance(reference, xr.DataArray) else reference)
    if mask.shape != tuple(scan_shape) or mask.dtype != bool:
        raise ValueError(
            f"reference must be 'auto' or a boolean array of the scan's shape {tuple(scan_shape)}; "
            f"got dtype {mask.dtype} and shape {mask.shape}. Build it with e.g. `mask = np.zeros(shape, bool); "
            "mask[:8, :8] = True`."
        )
    if not mask.any():
        raise ValueError("the reference map selects no probe position; mark at least one True.")
    return mask


def strain_fields(deformation: np.ndarray, groups: np.ndarray, reference: Any, order: int
                  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Strain and rotation relative to the reference, with the reference map used.

    Parameters
    ----------
    deformation
        ``(n_y, n_x, 2, 2)`` absolute deformation gradients (relative to any fixed lattice,
        e.g. a learned base), NaN where nothing was measured.
    groups
        ``(n_y, n_x)`` integer group of each pattern (for the automatic rule).
    reference
        ``"auto"`` or a boolean map of the scan.
    order
        Rotational symmetry ``n`` of the lattice.

    Returns
    -------
    fields, mask
        ``{"exx", "eyy", "exy", "rotation"}`` maps and the boolean reference map.
    """
    scan_shape = deformation.shape[:2]
    mask = as_reference_mask(reference, scan_shape)
    deformation = align_branch(deformation, order, branch_centre(deformation[np.all(np.isfinite(deformation),
                                                                                    axis=(-2, -1))], order))
    if mask is None:
        mask = automatic_reference(deformation, groups)
    chosen = deformation[mask]
    chosen = chosen[np.all(np.isfinite(chosen), axis=(-2, -1))]
    if len(chosen) == 0:
        raise ValueError("no pattern inside the reference map has a strain measurement; choose another region.")
    reference_f = np.median(chosen, axis=0)
    exx, eyy, exy, rotation = polar_strain(relative_deformation(deformation, reference_f))
    return {"exx": exx, "eyy": eyy, "exy": exy, "rotation": wrap_rotation(rotation, order)}, mask


def strain_dataset(fields: dict[str, np.ndarray], mask: np.ndarray, coords: dict, attrs: dict,
                   extra: dict[str, tuple] | None = None) -> xr.Dataset:
    """The result Dataset on ``(scan_y, scan_x)``: strain, rotation, the reference map and extras."""
    dims = ("scan_y", "scan_x")
    described = {"exx": "strain ε_xx", "eyy": "strain ε_yy", "exy": "strain ε_xy (tensor shear)",
                 "rotation": "lattice rotation, +x towards +y"}
    variables = {
        name: (dims, fields[name], {"units": "degree" if name == "rotation" else "1",
                                    "long_name": f"{text} relative to the reference"})
        for name, text in described.items()
    }
    variables["reference"] = (dims, mask, {"long_name": "probe positions whose median lattice is the reference"})
    variables.update(extra or {})
    return xr.Dataset(variables, coords=coords, attrs=attrs)
