"""Crystals: lattice, basis atoms, point group, d-spacings and structure factors.

Frames and units
----------------
- The crystal's Cartesian frame has a ∥ x, b in the x-y plane and c* ∥ z (the
  convention of orix and of most diffraction codes). Lengths in Å, angles in degrees.
- :attr:`Crystal.direct_basis` has the lattice vectors a, b, c as *columns*:
  ``r_cartesian = direct_basis @ r_fractional``.
- :attr:`Crystal.reciprocal_basis` has a*, b*, c* as columns, **without 2π**:
  ``g_cartesian = reciprocal_basis @ (h, k, l)`` and ``|g| = 1/d`` in 1/Å.
- Structure factor (in Å, like the atomic scattering amplitudes):

  .. math:: F(g) = \\sum_j o_j\\, f_{e,j}(|g|)\\, e^{-B_j s^2}\\, e^{2\\pi i (h x_j + k y_j + l z_j)},
            \\qquad s = \\sin\\theta/\\lambda = |g|/2

  with occupancy ``o_j``, isotropic Debye–Waller ``B_j`` (Å²) and the Lobato & Van Dyck
  ``f_e`` (:mod:`stemkit.physics.scattering`), times ``γ`` when a beam energy is given.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from stemkit.physics.scattering import element_symbol, relativistic_factor, scattering_factor
from stemkit.physics.symmetry import PointGroup, get_space_group

__all__ = ["Atom", "Crystal", "direct_basis_from_parameters"]

_POSITION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Atom:
    """One atom of the basis.

    Parameters
    ----------
    element
        Element symbol (``"Cu"``); charges and CIF labels are reduced to the element.
    position
        Fractional coordinates (x, y, z) in the unit cell.
    occupancy
        Site occupancy, 0 < occupancy <= 1.
    b_iso
        Isotropic Debye–Waller factor B in Å² (``B = 8π² ⟨u²⟩``), applied as
        ``exp(-B s²)`` with ``s = |g|/2``.
    """

    element: str
    position: tuple[float, float, float]
    occupancy: float = 1.0
    b_iso: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "element", element_symbol(self.element))
        position = tuple(float(v) for v in np.asarray(self.position, dtype=float).ravel())
        if len(position) != 3:
            raise ValueError(f"an atom's position must be 3 fractional coordinates; got {self.position!r}.")
        object.__setattr__(self, "position", position)
        if not 0 < self.occupancy <= 1:
            raise ValueError(f"occupancy must be in (0, 1]; got {self.occupancy!r} for {self.element}.")
        if not self.b_iso >= 0:
            raise ValueError(f"b_iso must be >= 0 Å²; got {self.b_iso!r} for {self.element}.")


def direct_basis_from_parameters(
    a: float, b: float, c: float, alpha: float, beta: float, gamma: float
) -> NDArray[np.float64]:
    """Lattice vectors a, b, c as the columns of a (3, 3) matrix, a ∥ x, c* ∥ z (Å)."""
    lengths = np.array([a, b, c], dtype=float)
    angles = np.array([alpha, beta, gamma], dtype=float)
    if np.any(lengths <= 0) or np.any(angles <= 0) or np.any(angles >= 180):
        raise ValueError(
            f"lattice parameters must be positive lengths (Å) and angles in (0, 180) degrees; "
            f"got a, b, c = {a}, {b}, {c} and alpha, beta, gamma = {alpha}, {beta}, {gamma}."
        )
    ca, cb, cg = np.cos(np.deg2rad(angles))
    sg = math.sin(math.radians(gamma))
    volume_factor = 1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg
    if volume_factor <= 0:
        raise ValueError(f"the angles alpha, beta, gamma = {alpha}, {beta}, {gamma} do not form a lattice.")
    cy = (ca - cb * cg) / sg
    cz = math.sqrt(volume_factor) / sg
    return np.array([[a, b * cg, c * cb], [0.0, b * sg, c * cy], [0.0, 0.0, c * cz]])


def _wrap_fractional(positions: NDArray[np.float64]) -> NDArray[np.float64]:
    """Wrap fractional coordinates into [0, 1), mapping values within tolerance of 1 to 0."""
    wrapped = np.mod(positions, 1.0)
    return np.where(wrapped > 1 - _POSITION_TOLERANCE, 0.0, wrapped)


class Crystal:
    """A crystal structure: lattice, the full unit cell of atoms and its point group.

    Parameters
    ----------
    a, b, c
        Lattice lengths in Å.
    alpha, beta, gamma
        Lattice angles in degrees.
    atoms
        All atoms of the unit cell (use :meth:`from_asymmetric_unit` to expand symmetry).
    name
        A label, e.g. ``"Cu"`` or ``"Cu2O"``.
    space_group
        International Tables number or Hermann–Mauguin symbol; used to derive the
        point group. Not used to expand ``atoms``.
    point_group
        The symmetry of orientations: a :class:`PointGroup`, or a Hermann–Mauguin point-group
        name in the standard setting. Default: derived from ``space_group``, else ``"-1"``.
    is_layer
        A single 2-D layer (graphene, hBN): ``c`` is then a vacuum spacing along the layer
        normal, not a period, and only reflections with ``l = 0`` exist (the reciprocal
        lattice is a set of rods along c*; the thickness given to the simulation sets
        their length, so give the layer's physical thickness, ~3 Å). The volume V = A c
        then only serves to give the layer's cell area A.

    Examples
    --------
    >>> cu = Crystal.preset("Cu")
    >>> round(float(cu.d_spacing([1, 1, 1])), 4)
    2.0871
    """

    def __init__(
        self,
        a: float,
        b: float,
        c: float,
        alpha: float,
        beta: float,
        gamma: float,
        atoms: Iterable[Atom],
        *,
        name: str = "",
        space_group: int | str | None = None,
        point_group: PointGroup | str | None = None,
        is_layer: bool = False,
    ) -> None:
        self._parameters = tuple(float(v) for v in (a, b, c, alpha, beta, gamma))
        self._direct = direct_basis_from_parameters(*self._parameters)
        self._direct.flags.writeable = False
        self._reciprocal = np.linalg.inv(self._direct).T
        self._reciprocal.flags.writeable = False
        self._atoms = tuple(atoms)
        if not self._atoms or not all(isinstance(atom, Atom) for atom in self._atoms):
            raise ValueError("atoms must be a non-empty sequence of stemkit.physics.Atom.")
        self.name = name
        self.is_layer = bool(is_layer)
        self.space_group = None if space_group is None else get_space_group(space_group).number
        self._point_group = self._resolve_point_group(point_group)
        self._cache: dict[Any, Any] = {}

    def _resolve_point_group(self, point_group: PointGroup | str | None) -> PointGroup:
        if isinstance(point_group, PointGroup):
            return point_group
        if isinstance(point_group, str):
            return PointGroup.from_name(point_group)
        if self.space_group is not None:
            return PointGroup.from_space_group(self.space_group, self._direct)
        return PointGroup.from_name("-1")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_asymmetric_unit(
        cls,
        a: float,
        b: float,
        c: float,
        alpha: float,
        beta: float,
        gamma: float,
        atoms: Iterable[Atom],
        space_group: int | str,
        **kwargs: Any,
    ) -> Crystal:
        """Build a crystal from the asymmetric unit by applying the space group's operations.

        Symmetry copies closer than 1e-4 (fractional) to an atom of the same element already
        placed are dropped (different elements may share a site, as in a disordered alloy). The
        space-group setting is diffpy.structure's default for the symbol or number (for
        centrosymmetric groups with two origins, origin choice 1 unless the symbol says otherwise).
        Keyword arguments go to the constructor.
        """
        group = get_space_group(space_group)
        expanded: list[Atom] = []
        occupied: dict[str, list[NDArray[np.float64]]] = {}
        for atom in atoms:
            position = np.asarray(atom.position)
            images = np.stack([np.asarray(op.R) @ position + np.asarray(op.t) for op in group.symop_list])
            sites = occupied.setdefault(atom.element, [])
            for image in _wrap_fractional(images):
                if not _is_occupied(image, sites):
                    sites.append(image)
                    expanded.append(Atom(atom.element, tuple(image), atom.occupancy, atom.b_iso))
        return cls(a, b, c, alpha, beta, gamma, expanded, space_group=group.number, **kwargs)

    @classmethod
    def from_cif(cls, path: str | Path, *, name: str | None = None, default_b_iso: float = 0.5) -> Crystal:
        """Read a crystal from a CIF file, expanding the symmetry to the full unit cell.

        Parameters
        ----------
        path
            The CIF file (parsed by diffpy.structure).
        name
            Label for the crystal; default: the CIF's data-block title or the file name.
        default_b_iso
            B (Å²) for atoms whose displacement parameter is absent from the file (read as
            0). Pass 0 to keep them static.
        """
        from diffpy.structure import getParser

        parser = getParser("cif")
        try:
            structure = parser.parseFile(str(path))
        except Exception as error:  # diffpy raises its own StructureFormatError
            raise ValueError(f"could not read a crystal structure from CIF file {str(path)!r}: {error}") from error
        atoms = [
            Atom(atom.element, tuple(_wrap_fractional(np.asarray(atom.xyz, dtype=float))), float(atom.occupancy),
                 float(atom.Bisoequiv) if atom.Bisoequiv > 0 else default_b_iso)
            for atom in structure
        ]
        space_group = getattr(parser, "spacegroup", None)
        label = name or structure.title or Path(path).stem
        return cls(*structure.lattice.abcABG(), atoms, name=label,
                   space_group=None if space_group is None else space_group.number)

    @classmethod
    def preset(cls, name: str) -> Crystal:
        """A built-in crystal by name; see :func:`stemkit.physics.presets.preset_names`."""
        from stemkit.physics.presets import crystal

        return crystal(name)

    # ------------------------------------------------------------------ geometry
    @property
    def lattice_parameters(self) -> tuple[float, float, float, float, float, float]:
        """(a, b, c, alpha, beta, gamma) in Å and degrees."""
        return self._parameters  # type: ignore[return-value]

    @property
    def direct_basis(self) -> NDArray[np.float64]:
        """Lattice vectors a, b, c as columns (3, 3), Cartesian Å."""
        return self._direct

    @property
    def reciprocal_basis(self) -> NDArray[np.float64]:
        """Reciprocal vectors a*, b*, c* as columns (3, 3), 1/Å, without 2π."""
        return self._reciprocal

    @property
    def volume(self) -> float:
        """Unit-cell volume in Å³."""
        return float(abs(np.linalg.det(self._direct)))

    @property
    def point_group(self) -> PointGroup:
        """The proper rotations of the Laue class, in the crystal's Cartesian frame."""
        return self._point_group

    @property
    def atoms(self) -> tuple[Atom, ...]:
        """All atoms of the unit cell."""
        return self._atoms

    @property
    def elements(self) -> tuple[str, ...]:
        """The distinct elements, in order of first appearance."""
        return tuple(dict.fromkeys(atom.element for atom in self._atoms))

    @property
    def fractional_positions(self) -> NDArray[np.float64]:
        """Fractional coordinates of all atoms, (n_atoms, 3)."""
        return np.array([atom.position for atom in self._atoms])

    @property
    def cartesian_positions(self) -> NDArray[np.float64]:
        """Cartesian coordinates of all atoms in Å, (n_atoms, 3)."""
        return self.fractional_positions @ self._direct.T

    def g_vectors(self, hkl: ArrayLike) -> NDArray[np.float64]:
        """Cartesian reciprocal-lattice vectors (..., 3) in 1/Å of Miller indices (..., 3)."""
        return _as_hkl(hkl) @ self._reciprocal.T

    def d_spacing(self, hkl: ArrayLike) -> NDArray[np.float64]:
        """Interplanar spacing ``d = 1/|g|`` in Å of Miller indices (..., 3) (inf for 000)."""
        with np.errstate(divide="ignore"):
            return 1.0 / np.linalg.norm(self.g_vectors(hkl), axis=-1)

    # ------------------------------------------------------------------ diffraction
    def structure_factor(self, hkl: ArrayLike, beam_energy_kev: float | None = None) -> NDArray[np.complex128]:
        """Kinematic structure factor ``F(hkl)`` in Å (see the module docstring).

        Parameters
        ----------
        hkl
            Miller indices (..., 3); need not be integers.
        beam_energy_kev
            If given, include the relativistic mass factor ``γ`` of that beam energy;
            otherwise ``F`` is for the rest mass.

        Returns
        -------
        numpy.ndarray
            Complex ``F``, shape ``hkl.shape[:-1]``.
        """
        hkl = _as_hkl(hkl)
        flat = hkl.reshape(-1, 3)
        g = np.linalg.norm(flat @ self._reciprocal.T, axis=-1)
        elements = self.elements
        f_by_element = np.stack([scattering_factor(element, g) for element in elements])  # (n_el, n)
        index = np.array([elements.index(atom.element) for atom in self._atoms])
        occupancy = np.array([atom.occupancy for atom in self._atoms])
        b_iso = np.array([atom.b_iso for atom in self._atoms])
        debye_waller = np.exp(-np.outer(g**2 / 4.0, b_iso))  # (n, n_atoms), s = g/2
        amplitude = f_by_element[index].T * occupancy * debye_waller
        phase = np.exp(2j * np.pi * (flat @ self.fractional_positions.T))
        factor = np.sum(amplitude * phase, axis=1)
        if beam_energy_kev is not None:
            factor = factor * relativistic_factor(beam_energy_kev)
        return factor.reshape(hkl.shape[:-1])

    def __repr__(self) -> str:
        a, b, c, alpha, beta, gamma = self._parameters
        return (f"Crystal({self.name!r}, a={a:g}, b={b:g}, c={c:g} Å, alpha={alpha:g}, beta={beta:g}, "
                f"gamma={gamma:g}°, {len(self._atoms)} atoms, point group {self._point_group.name}"
                f"{', single layer' if self.is_layer else ''})")


def _as_hkl(hkl: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(hkl, dtype=float)
    if arr.shape[-1:] != (3,):
        raise ValueError(f"Miller indices must have a last axis of length 3 (h, k, l); got shape {arr.shape}.")
    return arr


def _is_occupied(position: NDArray[np.float64], sites: list[NDArray[np.float64]]) -> bool:
    """Whether ``position`` coincides (modulo lattice translations) with one of ``sites``."""
    return any(np.abs((position - site + 0.5) % 1.0 - 0.5).max() <= _POSITION_TOLERANCE for site in sites)
