"""Electron scattering factors of neutral atoms and the relativistic beam constants.

Conventions (used throughout :mod:`stemkit.physics`)
----------------------------------------------------
- Reciprocal-space lengths carry no factor 2π: ``g = |g| = 1/d = 2 sin(θ)/λ`` in 1/Å.
  Where the crystallographic variable ``s = sin(θ)/λ = g/2`` appears (Debye–Waller
  factors), it is named ``s`` explicitly.
- ``f_e(g)`` is the first-Born electron scattering amplitude of a neutral, spherical,
  free atom in Å, for the electron *rest* mass, from the parametrisation of
  Lobato & Van Dyck (2014), Acta Cryst. A70, 636–649, doi:10.1107/S205327331401643X:

  .. math:: f_e(g) = \\sum_{i=1}^{5} a_i \\frac{2 + b_i g^2}{(1 + b_i g^2)^2}

  with the published parameters for Z = 1–103 in ``data/lobato_van_dyck_2014.csv``.
  It obeys the Mott–Bethe limit ``f_e → Z / (2π² a₀ g²)`` for large g exactly, and
  gives e.g. ``f_e(0) = 5.601 Å`` for Cu and ``0.529 Å = a₀`` for H.
- For a beam of kinetic energy E, the amplitude scales with the relativistic mass:
  multiply by :func:`relativistic_factor` ``γ = 1 + E / (m₀c²)``.
"""

from __future__ import annotations

import csv
import math
import re
from functools import lru_cache
from importlib import resources

import numpy as np
from numpy.typing import ArrayLike, NDArray

from stemkit.data.units import (
    ELECTRON_MASS_KG,
    ELEMENTARY_CHARGE_C,
    PLANCK_J_S,
    SPEED_OF_LIGHT_M_S,
    wavelength_angstrom,
)

__all__ = [
    "ELECTRON_REST_ENERGY_KEV",
    "LOBATO_TABLE",
    "atomic_number",
    "element_symbol",
    "interaction_constant",
    "relativistic_factor",
    "scattering_factor",
    "scattering_parameters",
]

#: Electron rest energy m₀c² in keV (CODATA 2018).
ELECTRON_REST_ENERGY_KEV = ELECTRON_MASS_KG * SPEED_OF_LIGHT_M_S**2 / ELEMENTARY_CHARGE_C / 1e3

#: File name of the parameter table inside ``stemkit/physics/data``.
LOBATO_TABLE = "lobato_van_dyck_2014.csv"

_CHARGE_OR_LABEL = re.compile(r"^([A-Z][a-z]?)")


@lru_cache(maxsize=1)
def _lobato_table() -> tuple[tuple[str, ...], NDArray[np.float64], NDArray[np.float64]]:
    """Read the Lobato & Van Dyck table: symbols (Z order), a (103, 5) and b (103, 5)."""
    text = resources.files("stemkit.physics").joinpath("data", LOBATO_TABLE).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    rows = list(csv.DictReader(lines))
    for expected_z, row in enumerate(rows, start=1):
        if int(row["Z"]) != expected_z:
            raise RuntimeError(f"{LOBATO_TABLE} is corrupt: row {expected_z} holds Z={row['Z']}.")
    symbols = tuple(row["symbol"] for row in rows)
    a = np.array([[float(row[f"a{i}"]) for i in range(1, 6)] for row in rows])
    b = np.array([[float(row[f"b{i}"]) for i in range(1, 6)] for row in rows])
    a.flags.writeable = False
    b.flags.writeable = False
    return symbols, a, b


def element_symbol(element: str | int) -> str:
    """Return the element symbol for a symbol, a CIF type label or an atomic number.

    Charges and site labels are stripped (``"Cu1+"`` → ``"Cu"``, ``"O2-"`` → ``"O"``):
    the scattering factors are those of neutral atoms.

    Examples
    --------
    >>> element_symbol(29), element_symbol("Cu1+"), element_symbol("o")
    ('Cu', 'Cu', 'O')
    """
    symbols = _lobato_table()[0]
    if isinstance(element, (int, np.integer)):
        if not 1 <= int(element) <= len(symbols):
            raise ValueError(f"atomic number must be in 1..{len(symbols)}; got {element}.")
        return symbols[int(element) - 1]
    text = str(element).strip()
    text = text[:1].upper() + text[1:2].lower() + text[2:]
    match = _CHARGE_OR_LABEL.match(text)
    if match:
        for candidate in (match.group(1), match.group(1)[:1]):
            if candidate in symbols:
                return candidate
    raise ValueError(
        f"unknown element {element!r}; expected a symbol such as 'Cu' or 'O' "
        f"(charges such as 'O2-' are accepted) or an atomic number 1..{len(symbols)}."
    )


def atomic_number(element: str | int) -> int:
    """Return the atomic number Z of ``element`` (symbol, CIF type label or Z)."""
    return _lobato_table()[0].index(element_symbol(element)) + 1


def scattering_parameters(element: str | int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Return the Lobato & Van Dyck parameters ``(a, b)`` of ``element``, each of shape (5,).

    ``a`` in Å, ``b`` in Å²; see the module docstring for the formula.
    """
    _, a, b = _lobato_table()
    z = atomic_number(element)
    return a[z - 1], b[z - 1]


def scattering_factor(element: str | int, g: ArrayLike) -> NDArray[np.float64]:
    """Electron scattering amplitude ``f_e(g)`` of a neutral atom, in Å (rest mass).

    Parameters
    ----------
    element
        Element symbol (``"Cu"``), CIF type label (``"Cu1+"``) or atomic number.
    g
        Scattering-vector magnitude ``|g| = 1/d = 2 sin(θ)/λ`` in 1/Å (no 2π), any shape.
        The parametrisation is fitted for ``0 <= g <= 12``.

    Returns
    -------
    numpy.ndarray
        ``f_e(g)`` in Å, the shape of ``g``. Multiply by :func:`relativistic_factor` for
        a beam of given energy.

    Examples
    --------
    >>> round(float(scattering_factor("Cu", 0.0)), 3)
    5.601
    """
    a, b = scattering_parameters(element)
    g2 = np.square(np.asarray(g, dtype=float))[..., None]
    bg2 = b * g2
    return np.sum(a * (2.0 + bg2) / np.square(1.0 + bg2), axis=-1)


def relativistic_factor(beam_energy_kev: float) -> float:
    """Lorentz factor ``γ = 1 + E / (m₀c²)`` of beam electrons of kinetic energy E (keV).

    Examples
    --------
    >>> round(relativistic_factor(300), 4)
    1.5871
    """
    if not beam_energy_kev > 0:
        raise ValueError(f"beam_energy_kev must be positive; got {beam_energy_kev!r}.")
    return 1.0 + beam_energy_kev / ELECTRON_REST_ENERGY_KEV


def interaction_constant(beam_energy_kev: float) -> float:
    """Relativistic interaction constant ``σ = 2π m e λ / h²`` in rad / (V·Å).

    ``m = γ m₀`` is the relativistic electron mass. The phase a thin specimen of
    projected potential ``V_z`` (V·Å) imparts is ``σ V_z``.

    Examples
    --------
    >>> round(interaction_constant(300) * 1e4, 3)  # 6.526e-4 rad/(V·Å) at 300 kV
    6.526
    """
    gamma = relativistic_factor(beam_energy_kev)
    wavelength_m = wavelength_angstrom(beam_energy_kev) * 1e-10
    sigma_per_v_m = 2 * math.pi * gamma * ELECTRON_MASS_KG * ELEMENTARY_CHARGE_C * wavelength_m / PLANCK_J_S**2
    return sigma_per_v_m * 1e-10
