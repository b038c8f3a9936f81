"""Strain and rotation maps (issue 7): the CC-ST-AE and the classical lattice-fit baseline.

Modules, one concept each:

- :mod:`polar`: deformation gradients and reciprocal maps → ``exx, eyy, exy, rotation``;
- :mod:`symmetry`: a lattice's or pattern's rotational order, rotations unwrapped by it;
- :mod:`reference`: the reference lattice, chosen by a documented rule or given as a map;
- :mod:`lattice_fit`: :class:`LatticeFit`, basis vectors fitted to the Bragg peaks;
- :mod:`patterns`: patterns prepared for registration (background, blur, annular mask);
- :mod:`warp`: affine warps and their Gauss-Newton refinement on the cycle loss;
- :mod:`model`, :mod:`loss`: the CC-ST-AE network and its cycle-consistent loss;
- :mod:`ccstae`: :class:`CCSTAE`, the estimator.

Both estimators return a Dataset on ``(scan_y, scan_x)`` with ``exx``, ``eyy``, ``exy``
(components of ``V − I`` of ``F = V R``), ``rotation`` (degrees, right-handed about the
beam), ``base`` and the ``reference`` map used (DESIGN.md).
"""

from stemkit.strain.ccstae import CCSTAE
from stemkit.strain.lattice_fit import LatticeFit, NotFittedError
from stemkit.strain.polar import (
    deformation_from_bases,
    deformation_from_reciprocal,
    polar_strain,
    relative_deformation,
)
from stemkit.strain.reference import automatic_reference, strain_fields
from stemkit.strain.symmetry import lattice_symmetry_order, pattern_symmetry_order, wrap_rotation

__all__ = [
    "CCSTAE",
    "LatticeFit",
    "NotFittedError",
    "automatic_reference",
    "deformation_from_bases",
    "deformation_from_reciprocal",
    "lattice_symmetry_order",
    "pattern_symmetry_order",
    "polar_strain",
    "relative_deformation",
    "strain_fields",
    "wrap_rotation",
]
