"""Unit conversions for calibrations: lengths to nm, scattering vectors to 1/Å.

Detector calibrations come in 1/nm, 1/Å, mrad or rad; mrad and rad need the
electron wavelength, k = θ / λ (small-angle, as every 4D-STEM calibration assumes).
"""

from __future__ import annotations

import math

# CODATA 2018
PLANCK_J_S = 6.62607015e-34
ELECTRON_MASS_KG = 9.1093837015e-31
ELEMENTARY_CHARGE_C = 1.602176634e-19
SPEED_OF_LIGHT_M_S = 299792458.0

LENGTH_TO_NM: dict[str, float] = {
    "m": 1e9, "mm": 1e6, "µm": 1e3, "μm": 1e3, "um": 1e3, "micron": 1e3, "nm": 1.0,
    "Å": 0.1, "A": 0.1, "angstrom": 0.1, "Angstrom": 0.1, "pm": 1e-3,
}
INVERSE_LENGTH_TO_INV_ANGSTROM: dict[str, float] = {
    "1/Å": 1.0, "1/A": 1.0, "Å⁻¹": 1.0, "Å^-1": 1.0, "A^-1": 1.0, "1/angstrom": 1.0,
    "1/nm": 0.1, "nm⁻¹": 0.1, "nm^-1": 0.1, "1/m": 1e-10, "1/pm": 100.0,
}
ANGLE_TO_RAD: dict[str, float] = {"rad": 1.0, "mrad": 1e-3, "µrad": 1e-6, "μrad": 1e-6, "urad": 1e-6}


def wavelength_angstrom(beam_energy_kev: float) -> float:
    """Relativistic electron wavelength in Å.

    Examples
    --------
    >>> round(wavelength_angstrom(300), 5)
    0.01969
    """
    if not beam_energy_kev > 0:
        raise ValueError(f"beam_energy_kev must be positive; got {beam_energy_kev!r}.")
    energy_j = beam_energy_kev * 1e3 * ELEMENTARY_CHARGE_C
    rest_j = ELECTRON_MASS_KG * SPEED_OF_LIGHT_M_S**2
    momentum = math.sqrt(energy_j * (energy_j + 2 * rest_j)) / SPEED_OF_LIGHT_M_S
    return PLANCK_J_S / momentum * 1e10


def length_to_nm(value: float, units: str) -> float:
    """Convert a length in ``units`` to nm."""
    try:
        return float(value) * LENGTH_TO_NM[units.strip()]
    except KeyError:
        raise ValueError(f"unknown length unit {units!r}; known: {sorted(LENGTH_TO_NM)}") from None


def k_to_inverse_angstrom(value: float, units: str, beam_energy_kev: float | None = None) -> float:
    """Convert a detector step in ``units`` (1/nm, 1/Å, mrad, rad, ...) to 1/Å.

    Angles need ``beam_energy_kev``; ``k = θ / λ``.
    """
    units = units.strip()
    if units in INVERSE_LENGTH_TO_INV_ANGSTROM:
        return float(value) * INVERSE_LENGTH_TO_INV_ANGSTROM[units]
    if units in ANGLE_TO_RAD:
        if beam_energy_kev is None:
            raise ValueError(
                f"the detector is calibrated in {units}; converting to 1/Å needs the beam energy: pass beam_energy_kev="
            )
        return float(value) * ANGLE_TO_RAD[units] / wavelength_angstrom(beam_energy_kev)
    known = sorted(INVERSE_LENGTH_TO_INV_ANGSTROM) + sorted(ANGLE_TO_RAD)
    raise ValueError(f"unknown reciprocal-space unit {units!r}; known: {known}")
