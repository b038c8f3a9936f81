"""Point groups as sets of proper rotations in a crystal's Cartesian frame.

Kinematic diffraction obeys Friedel's law, so a pattern cannot tell a crystal from its
inverse: the symmetry that makes two orientations indistinguishable is the set of
*proper* rotations of the crystal's Laue class (its point group plus inversion).
:class:`PointGroup` holds exactly that set, as Cartesian matrices acting on crystal-frame
vectors, so that ``R`` and ``R @ S`` are the same orientation for every ``S``.

Orders: m-3m 24, m-3 12, 6/mmm 12, 6/m 6, -3m 6, -3 3, 4/mmm 8, 4/m 4, mmm 4, 2/m 2, -1 1.

A point group is derived from a space group (:meth:`PointGroup.from_space_group`, which
follows the setting of the space group and the lattice) or built by name in the standard
Cartesian setting of :data:`LAUE_GENERATORS` (:meth:`PointGroup.from_name`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from stemkit.physics.rotations import axis_angle_to_matrix, matrix_to_quaternion

__all__ = ["LAUE_CLASSES", "LAUE_GENERATORS", "PointGroup", "laue_class"]

#: Point group (Hermann–Mauguin, as diffpy names them without "PG", "bar" → "-") → Laue class.
LAUE_CLASSES: dict[str, str] = {
    **dict.fromkeys(["1", "-1"], "-1"),
    **dict.fromkeys(["2", "m", "2/m"], "2/m"),
    **dict.fromkeys(["222", "mm2", "mmm"], "mmm"),
    **dict.fromkeys(["4", "-4", "4/m"], "4/m"),
    **dict.fromkeys(["422", "4mm", "-42m", "-4m2", "4/mmm"], "4/mmm"),
    **dict.fromkeys(["3", "-3"], "-3"),
    **dict.fromkeys(["32", "321", "312", "3m", "3m1", "31m", "-3m", "-3m1", "-31m"], "-3m"),
    **dict.fromkeys(["6", "-6", "6/m"], "6/m"),
    **dict.fromkeys(["622", "6mm", "-6m2", "-62m", "6/mmm"], "6/mmm"),
    **dict.fromkeys(["23", "m-3"], "m-3"),
    **dict.fromkeys(["432", "-43m", "m-3m"], "m-3m"),
}

_X, _Y, _Z = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)
_DIAGONAL = (1.0, 1.0, 1.0)

#: Generators (axis, angle in degrees) of the proper rotations of each Laue class in the
#: standard Cartesian setting: a ∥ x and c* ∥ z (so c ∥ z for all but triclinic and
#: monoclinic), monoclinic unique axis b ∥ y, trigonal/hexagonal 2-folds along a (-3m1).
LAUE_GENERATORS: dict[str, tuple[tuple[tuple[float, float, float], float], ...]] = {
    "-1": (),
    "2/m": ((_Y, 180.0),),
    "mmm": ((_Z, 180.0), (_X, 180.0)),
    "4/m": ((_Z, 90.0),),
    "4/mmm": ((_Z, 90.0), (_X, 180.0)),
    "-3": ((_Z, 120.0),),
    "-3m": ((_Z, 120.0), (_X, 180.0)),
    "6/m": ((_Z, 60.0),),
    "6/mmm": ((_Z, 60.0), (_X, 180.0)),
    "m-3": ((_Z, 180.0), (_X, 180.0), (_DIAGONAL, 120.0)),
    "m-3m": ((_Z, 90.0), (_DIAGONAL, 120.0)),
}

_EXPECTED_ORDER = {"-1": 1, "2/m": 2, "mmm": 4, "4/m": 4, "4/mmm": 8, "-3": 3, "-3m": 6,
                   "6/m": 6, "6/mmm": 12, "m-3": 12, "m-3m": 24}


def laue_class(point_group_name: str) -> str:
    """Return the Laue class of a point group given in Hermann–Mauguin notation.

    Accepts ``"m-3m"``, ``"m3m"``, diffpy's ``"PGm3barm"`` and ``"6/mmm"`` style names.

    Examples
    --------
    >>> laue_class("-43m"), laue_class("PG6barm2"), laue_class("4mm")
    ('m-3m', '6/mmm', '4/mmm')
    """
    name = point_group_name.strip().removeprefix("PG").replace(" ", "")
    for digit in "12346":
        name = name.replace(f"{digit}bar", f"-{digit}")
    aliases = {"m3m": "m-3m", "m3": "m-3", "m-3m": "m-3m"}
    name = aliases.get(name, name)
    try:
        return LAUE_CLASSES[name]
    except KeyError:
        raise ValueError(
            f"unknown point group {point_group_name!r}; expected a Hermann–Mauguin symbol such as "
            f"{sorted(set(LAUE_CLASSES))}."
        ) from None


def _unique_rotations(matrices: NDArray[np.float64], decimals: int = 6) -> NDArray[np.float64]:
    """Drop duplicate rotation matrices (equal after rounding), keeping first occurrences."""
    keys = np.round(matrices.reshape(len(matrices), 9), decimals) + 0.0
    _, first = np.unique(keys, axis=0, return_index=True)
    return matrices[np.sort(first)]


def _close_group(generators: NDArray[np.float64], max_order: int = 48) -> NDArray[np.float64]:
    """All products of ``generators`` (a finite group), identity first."""
    group = np.eye(3)[None]
    while True:
        products = np.einsum("aij,bjk->abik", group, np.concatenate([group, generators])).reshape(-1, 3, 3)
        grown = _unique_rotations(np.concatenate([group, products]))
        if len(grown) == len(group):
            return group
        if len(grown) > max_order:
            raise ValueError(f"the generators do not form a finite crystallographic group (> {max_order} elements).")
        group = grown


@dataclass(frozen=True, eq=False)
class PointGroup:
    """The proper rotations of a crystal's Laue class, in its Cartesian frame.

    Parameters
    ----------
    name
        Hermann–Mauguin symbol of the Laue class (``"m-3m"``, ``"6/mmm"``, ...).
    rotations
        Rotation matrices (n, 3, 3), identity first, acting on crystal-frame Cartesian
        vectors. The set must be closed under multiplication.
    """

    name: str
    rotations: NDArray[np.float64] = field(repr=False)

    def __post_init__(self) -> None:
        rotations = np.asarray(self.rotations, dtype=float)
        if rotations.ndim != 3 or rotations.shape[1:] != (3, 3):
            raise ValueError(f"rotations must have shape (n, 3, 3); got {rotations.shape}.")
        if not np.allclose(rotations @ np.swapaxes(rotations, 1, 2), np.eye(3), atol=1e-6) or not np.allclose(
            np.linalg.det(rotations), 1.0, atol=1e-6
        ):
            raise ValueError("rotations must be proper orthogonal matrices (RᵀR = I, det R = +1).")
        rotations.flags.writeable = False
        object.__setattr__(self, "rotations", rotations)

    @property
    def order(self) -> int:
        """Number of proper rotations."""
        return len(self.rotations)

    @property
    def quaternions(self) -> NDArray[np.float64]:
        """The rotations as unit quaternions (n, 4), scalar first, ``w >= 0``."""
        return matrix_to_quaternion(self.rotations)

    def is_closed(self, atol: float = 1e-6) -> bool:
        """Whether every product of two rotations is again in the set."""
        products = np.einsum("aij,bjk->abik", self.rotations, self.rotations).reshape(-1, 1, 9)
        distance = np.abs(products - self.rotations.reshape(1, -1, 9)).max(axis=2)
        return bool(np.all(distance.min(axis=1) < atol))

    def to_orix(self) -> Any:
        """The same rotations as an orix ``Symmetry``.

        They act on the right of stemkit orientations and therefore on the left of orix
        orientations (see :func:`stemkit.physics.rotations.to_orix`); the set is a group,
        so the same elements serve both sides.
        """
        from orix.quaternion import Symmetry

        symmetry = Symmetry(self.quaternions)
        symmetry.name = self.name
        return symmetry

    @classmethod
    def from_name(cls, name: str) -> PointGroup:
        """The proper rotations of the Laue class of point group ``name``, standard setting.

        See :data:`LAUE_GENERATORS` for the axes (a ∥ x, c* ∥ z; 2-folds of -3m and 6/mmm
        along a). For a crystal, prefer :meth:`from_space_group`, which follows its setting.
        """
        laue = laue_class(name)
        generators = LAUE_GENERATORS[laue]
        matrices = (np.stack([axis_angle_to_matrix(axis, angle) for axis, angle in generators])
                    if generators else np.empty((0, 3, 3)))
        rotations = _close_group(matrices)
        if len(rotations) != _EXPECTED_ORDER[laue]:  # pragma: no cover - guards the table above
            raise RuntimeError(f"Laue class {laue} generated {len(rotations)} rotations.")
        return cls(laue, rotations)

    @classmethod
    def from_space_group(cls, space_group: int | str, direct_basis: ArrayLike) -> PointGroup:
        """The proper rotations of a space group's Laue class, in the lattice's Cartesian frame.

        Parameters
        ----------
        space_group
            International Tables number (1–230) or Hermann–Mauguin symbol as diffpy.structure
            knows it (``"Fm-3m"``, ``"P6_3/mmc"``, ``"P 63/m m c"``).
        direct_basis
            (3, 3) matrix whose columns are the lattice vectors a, b, c in Cartesian Å
            (:attr:`stemkit.physics.Crystal.direct_basis`).
        """
        group = get_space_group(space_group)
        basis = np.asarray(direct_basis, dtype=float)
        fractional = np.stack([np.asarray(op.R, dtype=float) for op in group.symop_list])
        cartesian = basis @ fractional @ np.linalg.inv(basis)
        proper = cartesian * np.sign(np.linalg.det(cartesian))[:, None, None]
        rotations = _unique_rotations(proper, decimals=5)
        order = np.argsort([0 if np.allclose(r, np.eye(3)) else 1 for r in rotations], kind="stable")
        laue = laue_class(group.point_group_name)
        orthogonal = np.allclose(rotations @ np.swapaxes(rotations, 1, 2), np.eye(3), atol=1e-5)
        if not orthogonal or len(rotations) != _EXPECTED_ORDER[laue]:
            raise ValueError(
                f"space group {group.short_name} does not map onto {_EXPECTED_ORDER[laue]} Cartesian rotations "
                "for this lattice: are the lattice parameters compatible with it (e.g. a = b = c and 90° angles "
                "for a cubic group, a = b and gamma = 120° for a hexagonal one)?"
            )
        return cls(laue, rotations[order])


def get_space_group(space_group: int | str) -> Any:
    """Look up a diffpy.structure space group by number or Hermann–Mauguin symbol."""
    from diffpy.structure.spacegroups import GetSpaceGroup

    try:
        return GetSpaceGroup(space_group)
    except (ValueError, KeyError):
        if isinstance(space_group, str):
            try:
                return GetSpaceGroup(space_group.replace("_", "").replace(" ", ""))
            except (ValueError, KeyError):
                pass
    raise ValueError(
        f"unknown space group {space_group!r}; give its International Tables number (1-230) "
        "or a Hermann-Mauguin symbol such as 'Fm-3m' or 'P6_3/mmc'."
    )
