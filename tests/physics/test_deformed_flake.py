"""deformed_flake: region labels, the per-region table, and pixels that match it.

Ground truth is checked against the patterns themselves: peaks found with
:func:`stemkit.preprocess.find_peaks` are fitted with ``g' = F⁻ᵀ g`` against the hand-built
reciprocal lattice of 2H-WS2 at [001] (a along +kx), and F is decomposed as in DESIGN.md.
"""

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import stemkit
from stemkit.physics import crystal
from stemkit.physics import specimens
from stemkit.physics.specimens import deformation_gradient, deformed_flake, strain_from_deformation
from stemkit.physics.render import Detector, disk_radius, lorentzian_background
from stemkit.preprocess import find_peaks

N_REGIONS = 13  # vacuum, reference, strained, rotated, 6 ripple stripes, thick, composition, bent
FIELDS = ("exx", "eyy", "exy", "rotation")


@pytest.fixture(scope="module")
def flake():
    return deformed_flake(scan_shape=(20, 20), dose=1e7, background_fraction=0.0)


@pytest.fixture(scope="module")
def peaks(flake):
    return find_peaks(flake.intensity, threshold=8.0)


def pixel_of(flake: xr.Dataset, name: str) -> tuple[int, int]:
    """A probe position inside the named region (the middle one of its pixels)."""
    label = int(np.flatnonzero(flake.region_name.values == name)[0])
    pixels = np.argwhere(flake.region.values == label)
    return tuple(int(v) for v in pixels[len(pixels) // 2])


def spots(peaks: xr.Dataset, pixel: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Positions (n, 2) and intensities of the found peaks of one pattern, direct beam excluded."""
    p = peaks.isel(scan_y=pixel[0], scan_x=pixel[1])
    valid = p.valid.values
    k = np.stack([p.kx.values[valid], p.ky.values[valid]], axis=1).astype(float)
    intensity = p.intensity.values[valid].astype(float)
    off_axis = np.hypot(*k.T) > 0.02
    return k[off_axis], intensity[off_axis]


def match(a: np.ndarray, b: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the pairs of ``a`` and ``b`` closer than ``tolerance``."""
    distance = np.linalg.norm(a[:, None] - b[None], axis=-1)
    i = np.flatnonzero(distance.min(axis=1) < tolerance)
    return i, distance[i].argmin(axis=1)


def fitted_strain(peaks: xr.Dataset, pixel: tuple[int, int], guess: np.ndarray) -> np.ndarray:
    """exx, eyy, exy, rotation of the least-squares ``F⁻ᵀ`` mapping the WS2 lattice onto the found peaks."""
    basis = crystal("WS2").reciprocal_basis[:2, :2]
    h, k = np.meshgrid(np.arange(-6, 7), np.arange(-6, 7))
    lattice = np.stack([h.ravel(), k.ravel()]).T @ basis.T
    lattice = lattice[np.hypot(*lattice.T) > 0]
    found, _ = spots(peaks, pixel)
    i, j = match(lattice @ np.linalg.inv(guess), found, 0.02)
    assert len(i) >= 12, f"only {len(i)} spots matched"
    transposed, *_ = np.linalg.lstsq(lattice[i], found[j], rcond=None)
    return np.array(strain_from_deformation(np.linalg.inv(transposed.T).T))


def test_contract_labels_and_table(flake):
    stemkit.validate(flake.intensity)
    assert flake.intensity.shape == (20, 20, 128, 128)
    assert flake.region.dims == ("scan_y", "scan_x")
    np.testing.assert_array_equal(np.unique(flake.region), np.arange(N_REGIONS))  # every region is in the scan
    assert flake.sizes["region_id"] == N_REGIONS
    for name in (*FIELDS, "tilt_x", "tilt_y", "thickness", "region_name", "material", "is_vacuum"):
        assert flake[name].dims == ("region_id",)
    vacuum = flake.is_vacuum.values
    assert vacuum.tolist() == [True] + [False] * (N_REGIONS - 1)
    assert flake.material.values[0] == "vacuum" and flake.thickness.values[0] == 0
    assert set(flake.material.values[1:]) == {"WS2", "WSe2"}
    corners = flake.region.values[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.all(vacuum[corners])
    exx_map = flake.exx.sel(region_id=flake.region)
    assert exx_map.dims == ("scan_y", "scan_x")


def test_table_holds_the_stated_deformations(flake):
    row = {str(name): i for i, name in enumerate(flake.region_name.values)}
    table = {name: flake[name].values for name in (*FIELDS, "tilt_x", "tilt_y", "thickness")}
    assert [table[f][row["strained"]] for f in ("exx", "eyy", "exy")] == [0.02, -0.01, 0.005]
    assert table["rotation"][row["rotated"]] == 6.0 and table["tilt_x"][row["bent"]] == 1.0
    assert table["thickness"][row["thick"]] == 3 * table["thickness"][row["reference"]]
    ripple = [table["tilt_y"][row[f"ripple {i}"]] for i in range(1, 7)]
    np.testing.assert_allclose(ripple, [0.75, 1.5, 0.75, -0.75, -1.5, -0.75])
    mismatch = 3.2820 / 3.1532 - 1  # WSe2 relative to WS2, hand-computed from the lattice parameters
    np.testing.assert_allclose([table[f][row["composition"]] for f in FIELDS], [mismatch, mismatch, 0, 0])
    assert flake.material.values[row["composition"]] == "WSe2"


def test_layout_puts_regions_where_documented(flake):
    name = flake.region_name.values[flake.region.values]
    assert name[5, 4] == "reference" and name[5, 10] == "strained" and name[5, 15] == "rotated"
    assert name[10, 3] == "ripple 2" and name[10, 16] == "ripple 5"
    assert name[15, 5] == "thick" and name[15, 10] == "composition" and name[15, 15] == "bent"


@pytest.mark.parametrize("background_fraction", [0.0, 0.05])
def test_vacuum_holds_only_the_direct_beam(background_fraction):
    flake = deformed_flake(scan_shape=(8, 8), pattern_size=64, dose=None, background_fraction=background_fraction)
    detector = Detector(shape=(64, 64), k_step=0.025)
    ky, kx = detector.k_grid()
    far = np.hypot(ky, kx) > disk_radius(1.0, 300.0) + 3 * 0.025  # beyond the direct disk, its edge and blur
    background = background_fraction * lorentzian_background(detector, 0.4)
    vacuum = flake.intensity.values[flake.region.values == 0]
    crystal_patterns = flake.intensity.values[flake.region.values != 0]
    assert len(vacuum) and len(crystal_patterns)
    np.testing.assert_allclose(vacuum[:, far], np.broadcast_to(background[far], vacuum[:, far].shape), atol=1e-7)
    np.testing.assert_allclose(vacuum.sum(axis=(1, 2)), 1.0, atol=1e-5)
    assert np.all((crystal_patterns[:, far] - background[far]).sum(axis=1) > 0.05)  # Bragg disks


@pytest.mark.parametrize("tilted", ["ripple 2", "ripple 5", "bent"])
def test_tilt_changes_intensities_but_barely_positions(flake, peaks, tilted):
    k_reference, i_reference = spots(peaks, pixel_of(flake, "reference"))
    k_tilted, i_tilted = spots(peaks, pixel_of(flake, tilted))
    i, j = match(k_reference, k_tilted, 0.02)
    assert len(i) >= 12
    shift = np.linalg.norm(k_reference[i] - k_tilted[j], axis=1) / 0.025  # px
    strong = np.minimum(i_reference[i], i_tilted[j]) > 1e4  # weak disks mix in the l ≠ 0 reflections, which do move
    assert strong.sum() >= 6 and shift[strong].max() < 0.1, f"strong spots moved by up to {shift[strong].max():.3f} px"
    assert shift.max() < 0.5
    ratio = i_tilted[j] / i_reference[i]
    assert np.abs(ratio - 1).max() > 0.2, "a 1-1.5° tilt should change the excitation errors and intensities"


def test_thickness_changes_intensities(flake, peaks):
    k_reference, i_reference = spots(peaks, pixel_of(flake, "reference"))
    k_thick, i_thick = spots(peaks, pixel_of(flake, "thick"))
    i, j = match(k_reference, k_thick, 0.005)
    assert len(i) >= 12 and np.abs(i_thick[j] / i_reference[i] - 1).max() > 0.2


@pytest.mark.parametrize("name", ["reference", "strained", "rotated", "composition", "thick", "ripple 2", "bent"])
def test_the_pixels_match_the_table(flake, peaks, name):
    """Strain and rotation fitted to the found peaks equal the table (the rotated region: 6°, counter-clockwise)."""
    row = int(np.flatnonzero(flake.region_name.values == name)[0])
    truth = np.array([float(flake[f].values[row]) for f in FIELDS])
    fitted = fitted_strain(peaks, pixel_of(flake, name), deformation_gradient(*truth))
    np.testing.assert_allclose(fitted[:3], truth[:3], atol=1e-3)
    assert abs(fitted[3] - truth[3]) <= 0.05, (fitted, truth)


def test_rotated_region_spots_turn_by_the_stated_angle(flake, peaks):
    k_reference, _ = spots(peaks, pixel_of(flake, "reference"))
    k_rotated, _ = spots(peaks, pixel_of(flake, "rotated"))
    angle = np.deg2rad(6.0)
    turned = k_reference @ np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]).T
    i, j = match(turned, k_rotated, 0.005)
    assert len(i) >= 12
    a, b = k_reference[i], k_rotated[j]
    measured = np.rad2deg(np.arctan2(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0], np.einsum("ij,ij->i", a, b)))
    assert np.median(measured) == pytest.approx(6.0, abs=0.05)


def test_deterministic_and_lazy_equals_eager(monkeypatch):
    monkeypatch.setattr(specimens, "_rows_per_chunk", lambda n_x, shape: 3)  # chunks of 3 + 3 + 1 rows
    kwargs = dict(scan_shape=(7, 9), pattern_size=48, dose=1e4, seed=5)
    eager = deformed_flake(**kwargs)
    xr.testing.assert_identical(eager, deformed_flake(**kwargs))
    lazy = deformed_flake(**kwargs, lazy=True)
    assert isinstance(lazy.intensity.data, da.Array) and lazy.intensity.data.numblocks[0] == 3
    np.testing.assert_array_equal(lazy.intensity.values, eager.intensity.values)
    assert not np.array_equal(deformed_flake(**(kwargs | {"seed": 6})).intensity.values, eager.intensity.values)


def test_bad_arguments_say_what_to_do():
    with pytest.raises(ValueError, match="n_ripples"):
        deformed_flake(scan_shape=(4, 4), n_ripples=0)
    with pytest.raises(ValueError, match="structure type"):
        deformed_flake(scan_shape=(4, 4), composition="Cu")
    with pytest.raises(ValueError, match="not percent"):
        deformed_flake(scan_shape=(4, 4), strain=(2.0, 0.0, 0.0))
