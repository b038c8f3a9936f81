"""Orientation results out of stemkit: orix crystal maps, EDAX/TSL .ang files, disorientations.

A result here is the Dataset of :meth:`stemkit.OrientationMapper.predict` (or anything with
the same variables): ``quaternion`` on ``(scan_y, scan_x, quat)`` in stemkit's convention
(crystal → lab, DESIGN.md), ``phase`` (names, ``""`` where nothing was found) and optionally
``confidence``, ``phase_probability``, ``n_peaks``, ``ambiguous``; scan coordinates in nm.

orix orientations map the lab (sample) frame to the crystal frame, the inverse of
stemkit's; the conversion is :func:`stemkit.physics.rotations.to_orix` /
:func:`~stemkit.physics.rotations.from_orix` and nothing else. orix places a crystal's
lattice with a ∥ x and c* ∥ z, as :class:`stemkit.physics.Crystal` does, so crystal-frame
vectors mean the same in both.

.ang files follow EDAX/TSL's text layout (which orix, MTEX and OIM Analysis read): a ``#``
header with one block per phase (name, formula, TSL symmetry code, lattice constants) and
the scan grid, then one row per pattern: ``phi1 PHI phi2`` (Bunge Euler angles, radians, of
the orix orientation), ``x y`` (µm), ``IQ`` (here the number of diffracted disks read),
``CI`` (the confidence; -1 where no phase was found), ``phase_id`` (1-based, 0 where none),
``detector signal`` (here the phase probability) and ``fit`` (0: no pattern fit is computed).
The formula written for each phase is the unit cell's empirical formula; ``orix.io.load``
names phases after it by default (``autogen_names=False`` keeps the material names).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike, NDArray

from stemkit.data.contract import SCAN_DIMS
from stemkit.physics.crystal import Crystal
from stemkit.physics.presets import crystal as preset_crystal
from stemkit.physics.rotations import from_orix, misorientation_angle, to_orix
from stemkit.physics.symmetry import PointGroup

__all__ = ["TSL_SYMMETRY_CODES", "disorientation", "from_crystal_map", "to_crystal_map", "write_ang"]

#: EDAX/TSL's ``# Symmetry`` code of each Laue class.
TSL_SYMMETRY_CODES = {"m-3m": 43, "m-3": 23, "6/mmm": 62, "6/m": 6, "-3m": 32, "-3": 3, "4/mmm": 42, "4/m": 4,
                      "mmm": 22, "2/m": 2, "-1": 1}
#: Per-pattern result variables carried into a crystal map as properties (when present).
PROPERTIES = ("confidence", "phase_probability", "n_peaks", "ambiguous")
_NM_PER_UNIT = {"nm": 1.0, "um": 1e3, "µm": 1e3, "mm": 1e6}


def disorientation(q1: ArrayLike, q2: ArrayLike, crystal: Crystal | PointGroup | str) -> NDArray[np.float64]:
    """Smallest rotation angle (degrees) between orientations, over the crystal's symmetry.

    Parameters
    ----------
    q1, q2
        Quaternions (..., 4), (w, x, y, z), crystal → lab; broadcast against each other.
        A pair with a NaN gives NaN.
    crystal
        A :class:`~stemkit.physics.Crystal`, a preset name (``"Cu"``) or a point group.

    Returns
    -------
    numpy.ndarray
        Angles in [0, 180] degrees, the broadcast shape of the inputs without the last axis.

    Examples
    --------
    >>> import numpy as np
    >>> quarter_turn = [np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)]  # 90° about [001]
    >>> float(disorientation([1, 0, 0, 0], quarter_turn, "Cu").round(9))
    0.0
    """
    group = _point_group(crystal)
    a, b = np.broadcast_arrays(np.asarray(q1, dtype=float), np.asarray(q2, dtype=float))
    if a.shape[-1:] != (4,):
        raise ValueError(f"quaternions must have a last axis of length 4 (w, x, y, z); got shape {a.shape}")
    flat_a, flat_b = a.reshape(-1, 4), b.reshape(-1, 4)
    valid = np.all(np.isfinite(flat_a) & np.isfinite(flat_b), axis=1)
    angles = np.full(len(flat_a), np.nan)
    if valid.any():
        angles[valid] = misorientation_angle(flat_a[valid], flat_b[valid], group)
    return angles.reshape(a.shape[:-1])


def _point_group(crystal: Crystal | PointGroup | str) -> PointGroup:
    if isinstance(crystal, PointGroup):
        return crystal
    if isinstance(crystal, str):
        return preset_crystal(crystal).point_group
    if isinstance(crystal, Crystal):
        return crystal.point_group
    raise TypeError(f"crystal must be a Crystal, a preset name or a PointGroup; got {type(crystal).__name__}")


def _crystals_by_name(crystals: Sequence[Crystal | str] | Mapping[str, Crystal | str]) -> dict[str, Crystal]:
    """Crystals keyed by name (preset names are looked up)."""
    if isinstance(crystals, (str, Crystal)):
        crystals = [crystals]
    items = crystals.items() if isinstance(crystals, Mapping) else ((None, c) for c in crystals)
    table = {}
    for key, value in items:
        xtal = preset_crystal(value) if isinstance(value, str) else value
        if not isinstance(xtal, Crystal):
            raise TypeError(f"crystals must be Crystal objects or preset names; got {type(value).__name__}")
        table[key if key is not None else xtal.name] = xtal
    return table


def _phase_names(result: xr.Dataset) -> list[str]:
    """The result's phases in id order: ``attrs["phases"]`` when present, else the names found, sorted."""
    found = sorted({str(p) for p in np.unique(result["phase"].values)} - {""})
    names = [str(p) for p in result.attrs.get("phases", found)]
    missing = set(found) - set(names)
    if missing:
        raise ValueError(f"the result's phase map holds {sorted(missing)}, which attrs['phases'] ({names}) lacks")
    return names


def _check_result(result: xr.Dataset) -> None:
    if not isinstance(result, xr.Dataset) or "quaternion" not in result or "phase" not in result:
        raise TypeError("result must be a Dataset with 'quaternion' (scan_y, scan_x, quat) and 'phase' (scan_y, "
                        "scan_x), such as OrientationMapper.predict returns")
    if result["quaternion"].dims != (*SCAN_DIMS, "quat") or result["phase"].dims != SCAN_DIMS:
        raise ValueError(f"expected quaternion dims {(*SCAN_DIMS, 'quat')} and phase dims {SCAN_DIMS}; got "
                         f"{result['quaternion'].dims} and {result['phase'].dims}")


def _scan_axis(result: xr.Dataset, dim: str) -> NDArray[np.float64]:
    """Scan coordinates of ``dim`` in nm (pixel indices where the result has none)."""
    if dim not in result.coords:
        return np.arange(result.sizes[dim], dtype=float)
    units = str(result[dim].attrs.get("units", "nm"))
    if units not in _NM_PER_UNIT:
        raise ValueError(f"scan coordinate {dim} has units {units!r}; expected one of {sorted(_NM_PER_UNIT)}")
    return np.asarray(result[dim].values, dtype=float) * _NM_PER_UNIT[units]


_PHASE_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


def _orix_phase(xtal: Crystal, index: int = 0) -> Any:
    """An orix ``Phase`` with the crystal's lattice, atoms and symmetry (and a colour of its own by index)."""
    from diffpy.structure import Atom, Lattice, Structure
    from orix.crystal_map import Phase

    structure = Structure(atoms=[Atom(a.element, a.position, occupancy=a.occupancy) for a in xtal.atoms],
                          lattice=Lattice(*xtal.lattice_parameters))
    color = _PHASE_COLORS[index % len(_PHASE_COLORS)]
    if xtal.space_group is not None:
        return Phase(name=xtal.name, space_group=xtal.space_group, structure=structure, color=color)
    return Phase(name=xtal.name, point_group=xtal.point_group.name, structure=structure, color=color)


def to_crystal_map(result: xr.Dataset, crystals: Sequence[Crystal | str] | Mapping[str, Crystal | str]) -> Any:
    """The result as an orix ``CrystalMap``.

    Parameters
    ----------
    result
        An orientation result (see the module docstring).
    crystals
        The crystals of the result's phases (objects or preset names), matched by name.

    Returns
    -------
    orix.crystal_map.CrystalMap
        Phase ids 0, 1, ... in the order of ``result.attrs["phases"]`` (-1, not indexed, where
        the phase is ``""``); rotations from :func:`~stemkit.physics.rotations.to_orix`
        (identity where not indexed); ``x``/``y`` the scan coordinates in nm (``scan_unit="nm"``);
        properties :data:`PROPERTIES` that the result has.
    """
    from orix.crystal_map import CrystalMap, PhaseList
    from orix.quaternion import Rotation

    _check_result(result)
    names = _phase_names(result)
    table = _crystals_by_name(crystals)
    absent = [n for n in names if n not in table]
    if absent:
        raise ValueError(f"no crystal given for phase(s) {absent}; pass crystals for all of {names} "
                         f"(got {sorted(table)})")
    phase = result["phase"].values.ravel().astype(str)
    phase_id = np.full(phase.shape, -1, dtype=int)
    for index, name in enumerate(names):
        phase_id[phase == name] = index
    quaternion = result["quaternion"].values.reshape(-1, 4)
    indexed = (phase_id >= 0) & np.all(np.isfinite(quaternion), axis=1)
    phase_id[~indexed] = -1
    data = np.tile([1.0, 0.0, 0.0, 0.0], (len(phase_id), 1))
    data[indexed] = to_orix(quaternion[indexed]).data
    y, x = np.meshgrid(_scan_axis(result, "scan_y"), _scan_axis(result, "scan_x"), indexing="ij")
    phase_list = PhaseList({index: _orix_phase(table[name], index) for index, name in enumerate(names)})
    properties = {name: result[name].values.ravel().astype(float) for name in PROPERTIES if name in result}
    return CrystalMap(Rotation(data), phase_id=phase_id, x=x.ravel(), y=y.ravel(), phase_list=phase_list,
                      prop=properties, scan_unit="nm")


def from_crystal_map(cmap: Any) -> xr.Dataset:
    """An orientation result (``quaternion``, ``phase`` and the map's properties) from an orix ``CrystalMap``.

    Parameters
    ----------
    cmap
        A 2D orix ``CrystalMap`` (e.g. from :func:`to_crystal_map` or ``orix.io.load``).

    Returns
    -------
    xarray.Dataset
        On ``(scan_y, scan_x)``: ``quaternion`` (dim ``quat``, stemkit convention, NaN where not
        indexed), ``phase`` (names, ``""`` where not indexed) and each property of the map;
        scan coordinates in nm when the map's unit is nm, µm or mm. ``attrs["phases"]`` lists
        the phase names in id order.
    """
    shape = tuple(cmap.shape)
    if len(shape) != 2:
        raise ValueError(f"from_crystal_map needs a 2D crystal map; got shape {shape}")
    y = np.asarray(cmap.y, dtype=float).reshape(shape)
    x = np.asarray(cmap.x, dtype=float).reshape(shape)
    if not (np.allclose(y, y[:, :1]) and np.allclose(x, x[:1, :])):
        raise ValueError("the crystal map's points are not on a rectangular grid in row-major (y, then x) order")
    scale = _NM_PER_UNIT.get(str(cmap.scan_unit), 1.0)
    units = "nm" if str(cmap.scan_unit) in _NM_PER_UNIT else str(cmap.scan_unit)
    phase_id = np.asarray(cmap.phase_id).reshape(-1)
    quaternion = from_orix(cmap.rotations)
    quaternion[phase_id < 0] = np.nan
    ids = [i for i in cmap.phases.ids if i >= 0]
    id_names = {i: cmap.phases[i].name for i in ids}
    phase = np.array([id_names.get(int(i), "") for i in phase_id], dtype=object).astype(str)
    variables: dict[str, Any] = {
        "quaternion": ((*SCAN_DIMS, "quat"), quaternion.reshape(*shape, 4),
                       {"convention": "(w, x, y, z), crystal → lab"}),
        "phase": (SCAN_DIMS, phase.reshape(shape)),
    }
    for name, values in cmap.prop.items():
        variables[name] = (SCAN_DIMS, np.asarray(values).reshape(shape))
    return xr.Dataset(
        variables,
        coords={"scan_y": ("scan_y", y[:, 0] * scale, {"units": units}),
                "scan_x": ("scan_x", x[0] * scale, {"units": units}), "quat": ["w", "x", "y", "z"]},
        attrs={"phases": [id_names[i] for i in ids], "source": "orix CrystalMap"},
    )


def _formula(xtal: Crystal) -> str:
    """Empirical formula of the unit cell in Hill order (C, H, then alphabetical), e.g. ``Cu2O``."""
    counts: dict[str, float] = {}
    for atom in xtal.atoms:
        counts[atom.element] = counts.get(atom.element, 0.0) + atom.occupancy
    integers = {element: int(round(count)) for element, count in counts.items()}
    common = int(np.gcd.reduce([n for n in integers.values() if n > 0])) if any(integers.values()) else 1
    order = sorted(integers, key=lambda e: (e != "C", e != "H", e)) if "C" in integers else sorted(integers)
    return "".join(f"{e}{integers[e] // common if integers[e] // common != 1 else ''}" for e in order)


def _ang_header(names: list[str], table: dict[str, Crystal], step_um: tuple[float, float],
                shape: tuple[int, int]) -> list[str]:
    """TSL header lines: one block per phase, then the square grid."""
    lines = ["TEM_PIXperUM          1.000000", "x-star                0.000000", "y-star                0.000000",
             "z-star                0.000000", "WorkingDistance       0.000000", ""]
    for index, name in enumerate(names, start=1):
        xtal = table[name]
        laue = xtal.point_group.name
        if laue not in TSL_SYMMETRY_CODES:  # pragma: no cover - every Laue class has a code
            raise ValueError(f"no TSL symmetry code for Laue class {laue!r}")
        a, b, c, alpha, beta, gamma = xtal.lattice_parameters
        formula = _formula(xtal)
        lines += [f"Phase {index}", f"MaterialName  \t{name}", f"Formula     \t{formula}", "Info \t\t",
                  f"Symmetry              {TSL_SYMMETRY_CODES[laue]}",
                  f"LatticeConstants      {a:.4f} {b:.4f} {c:.4f} {alpha:.3f} {beta:.3f} {gamma:.3f}",
                  "NumberFamilies        0", ""]
    lines += ["GRID: SqrGrid", f"XSTEP: {step_um[1]:.6f}", f"YSTEP: {step_um[0]:.6f}", f"NCOLS_ODD: {shape[1]}",
              f"NCOLS_EVEN: {shape[1]}", f"NROWS: {shape[0]}", "", "OPERATOR: \tstemkit", "SAMPLEID: \t",
              "SCANID: \t", ""]
    return ["# " + line if line else "#" for line in lines]


def write_ang(result: xr.Dataset, path: str | Path, crystals: Sequence[Crystal | str] | Mapping[str, Crystal | str],
              *, overwrite: bool = False) -> Path:
    """Write the result as an EDAX/TSL ``.ang`` text file (columns in the module docstring).

    Parameters
    ----------
    result
        An orientation result (see the module docstring).
    path
        The file to write.
    crystals
        The crystals of the result's phases (objects or preset names), matched by name.
    overwrite
        Replace an existing file; without it an existing ``path`` raises ``FileExistsError``.

    Returns
    -------
    pathlib.Path
        The path written. ``orix.io.load(path)`` reads it back (scan unit µm).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it, or choose another path")
    cmap = to_crystal_map(result, crystals)
    names = _phase_names(result)
    table = _crystals_by_name(crystals)
    shape = tuple(result.sizes[d] for d in SCAN_DIMS)
    y_um = np.repeat(_scan_axis(result, "scan_y"), shape[1]) / 1e3
    x_um = np.tile(_scan_axis(result, "scan_x"), shape[0]) / 1e3
    steps = tuple(float(np.diff(v).mean()) if len(v) > 1 else 0.0
                  for v in (_scan_axis(result, "scan_y") / 1e3, _scan_axis(result, "scan_x") / 1e3))
    indexed = cmap.phase_id >= 0
    euler = np.where(indexed[:, None], cmap.rotations.to_euler(), 0.0)
    column = lambda name, default: (np.asarray(cmap.prop[name], dtype=float) if name in cmap.prop  # noqa: E731
                                    else np.full(cmap.size, default))
    confidence = np.where(indexed, column("confidence", 1.0), -1.0)
    phase_id = np.where(indexed, cmap.phase_id + 1, 0)
    table_rows = np.column_stack([euler, x_um, y_um, column("n_peaks", 0.0), confidence, phase_id,
                                  column("phase_probability", 0.0), np.zeros(cmap.size)])
    header = _ang_header(names, table, steps, shape)
    formats = ["%.6f"] * 3 + ["%.6f"] * 2 + ["%.1f", "%.4f", "%d", "%.4f", "%.3f"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="ascii", errors="replace") as handle:
        handle.write("\n".join(header) + "\n")
        np.savetxt(handle, table_rows, fmt=formats, delimiter=" ")
    return path
