"""Electron scattering factors (Lobato & Van Dyck 2014) and relativistic constants."""

from __future__ import annotations

import numpy as np
import pytest

from stemkit.physics import (
    atomic_number,
    element_symbol,
    interaction_constant,
    relativistic_factor,
    scattering_factor,
    wavelength_angstrom,
)
from stemkit.physics.scattering import _lobato_table, scattering_parameters

BOHR_RADIUS_ANGSTROM = 0.529177210903


def test_table_covers_hydrogen_to_lawrencium():
    symbols, a, b = _lobato_table()
    assert len(symbols) == 103 and a.shape == b.shape == (103, 5)
    assert symbols[0] == "H" and symbols[28] == "Cu" and symbols[78] == "Au" and symbols[82] == "Bi"
    assert np.all(b > 0)


def test_every_row_obeys_the_mott_bethe_limit():
    """Large g: f_e → Z / (2π² a₀ g²), i.e. Σ a_i / b_i = Z / (2π² a₀); the fit imposes it exactly.

    This checks every one of the 103 rows of the data file (a transcription error in a or
    b would break it) and that g is 1/d (with g = 4π sinθ/λ the constant would differ by 4π²).
    """
    _, a, b = _lobato_table()
    z = np.arange(1, 104)
    np.testing.assert_allclose((a / b).sum(axis=1), z / (2 * np.pi**2 * BOHR_RADIUS_ANGSTROM), rtol=1e-8)
    g = 1000.0
    assert scattering_factor("Au", g) * g**2 == pytest.approx(79 / (2 * np.pi**2 * BOHR_RADIUS_ANGSTROM), rel=1e-3)


def test_forward_scattering_of_every_row_is_a_rounded_hartree_fock_value():
    """f_e(0) = 2 Σ a_i equals the tabulated Hartree–Fock value, given to 6 decimals, for every row.

    The sum of five 15-digit parameters lands on a 6-decimal number only if every a_i was
    transcribed intact (hydrogen's value is a₀ to more digits, see the next test).
    """
    _, a, _ = _lobato_table()
    f0 = 2 * a[1:].sum(axis=1)
    np.testing.assert_allclose(f0, np.round(f0, 6), rtol=0, atol=5e-9)


def test_hydrogen_forward_scattering_is_the_bohr_radius():
    """Hand-computed: for the H 1s atom, f_e(0) = a₀ exactly."""
    assert scattering_factor("H", 0.0) == pytest.approx(BOHR_RADIUS_ANGSTROM, abs=1e-6)


@pytest.mark.parametrize(("element", "f0"), [("Cu", 5.6010), ("O", 2.0291), ("Si", 5.8360), ("Au", 10.5758),
                                             ("W", 12.6368), ("S", 5.2539), ("C", 2.5097)])
def test_forward_scattering_spot_values(element, f0):
    """f_e(0) in Å from Lobato & Van Dyck (2014), Table 1 (2 Σ a_i)."""
    assert scattering_factor(element, 0.0) == pytest.approx(f0, abs=1e-4)


@pytest.mark.parametrize(
    ("element", "g", "kirkland"),
    [("Cu", 0.5, 2.8011), ("Cu", 1.0, 1.4643), ("Cu", 2.0, 0.5225),
     ("O", 0.5, 1.2231), ("O", 1.0, 0.5421), ("Si", 0.5, 1.9658), ("Si", 1.0, 0.7423),
     ("C", 0.5, 1.1700), ("Mo", 1.0, 1.9350), ("S", 1.0, 0.8606)],
)
def test_agrees_with_the_independent_kirkland_parametrisation(element, g, kirkland):
    """Kirkland (2010, Advanced Computing in EM, App. C) values, f_e in Å at g = 1/d in 1/Å; within 1.5 %."""
    assert scattering_factor(element, g) == pytest.approx(kirkland, rel=0.015)


def test_decreases_monotonically_and_stays_positive_for_all_elements():
    g = np.linspace(0.0, 12.0, 1201)
    for z in range(1, 104):
        f = scattering_factor(z, g)
        assert np.all(f > 0), element_symbol(z)
        assert np.all(np.diff(f) < 0), element_symbol(z)


def test_scattering_factor_keeps_the_shape_of_g():
    g = np.linspace(0, 2, 12).reshape(3, 4)
    assert scattering_factor("Cu", g).shape == (3, 4)
    a, b = scattering_parameters("Cu")
    assert a.shape == b.shape == (5,)


@pytest.mark.parametrize(("given", "symbol"), [("Cu", "Cu"), ("cu", "Cu"), ("Cu1+", "Cu"), ("O2-", "O"),
                                               (74, "W"), ("Se", "Se"), ("S1", "S"), ("Ca", "Ca")])
def test_element_symbol(given, symbol):
    assert element_symbol(given) == symbol


def test_atomic_number_and_unknown_element():
    assert atomic_number("Au") == 79 and atomic_number(8) == 8
    with pytest.raises(ValueError, match="unknown element"):
        element_symbol("Xx")
    with pytest.raises(ValueError, match="atomic number"):
        element_symbol(0)


def test_relativistic_constants():
    """γ = 1 + E/511 keV; σ from Kirkland (2010) Table: 9.24e-4, 7.29e-4, 6.53e-4 rad/(V·Å) at 100/200/300 kV."""
    assert relativistic_factor(300) == pytest.approx(1 + 300 / 510.99895, rel=1e-9)
    assert interaction_constant(100) == pytest.approx(9.244e-4, rel=1e-3)
    assert interaction_constant(200) == pytest.approx(7.288e-4, rel=1e-3)
    assert interaction_constant(300) == pytest.approx(6.526e-4, rel=1e-3)
    assert wavelength_angstrom(200) == pytest.approx(0.025079, abs=1e-6)
    with pytest.raises(ValueError, match="positive"):
        relativistic_factor(-1)
