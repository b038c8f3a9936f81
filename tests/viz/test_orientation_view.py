"""orientation_view: IPF, phase, confidence and ambiguity maps linked to the pattern with peaks and simulated reflections."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from stemkit.orientation import ipf_colors
from stemkit.physics import crystal
from stemkit.physics.specimens import polycrystal
from stemkit.preprocess import find_peaks
from stemkit.viz import orientation_view
from tests.viz.browser import click_data, screenshot, signature, wait_for_change, wait_for_plot, wait_for_text


@pytest.fixture(scope="module")
def specimen() -> xr.Dataset:
    return polycrystal(scan_shape=(12, 16), n_grains=4, pattern_size=64, k_step=0.04, seed=1)


@pytest.fixture(scope="module")
def peaks(specimen) -> xr.Dataset:
    return find_peaks(specimen.intensity)


def result_of(specimen: xr.Dataset) -> xr.Dataset:
    """A result with the contract of OrientationMapper.predict, made from the specimen's ground truth."""
    rng = np.random.default_rng(0)
    confidence = np.clip(0.9 - 0.35 * rng.random(specimen.phase.shape), 0, 1)
    phase = specimen.phase.values.copy()
    quaternion = specimen.quaternion.values.copy()
    phase[0, 0], quaternion[0, 0] = "", np.nan  # one pattern without an answer
    return xr.Dataset(
        {"quaternion": (("scan_y", "scan_x", "quat"), quaternion), "phase": (("scan_y", "scan_x"), phase),
         "confidence": (("scan_y", "scan_x"), confidence), "ambiguous": (("scan_y", "scan_x"), confidence < 0.6)},
        coords={"scan_y": specimen.scan_y, "scan_x": specimen.scan_x, "quat": ["w", "x", "y", "z"]},
        attrs={"phases": ["Cu", "Cu2O"]},
    )


def test_ipf_colours_computed_per_phase_or_taken_from_the_result(specimen):
    result = result_of(specimen)
    view = orientation_view(result, specimen.intensity)
    rgb = view.ipf_rgb()
    iy, ix = 5, 7
    expected = ipf_colors(result.quaternion.values[iy, ix], crystal(str(result.phase.values[iy, ix])).point_group)
    np.testing.assert_allclose(rgb[iy, ix], expected)
    assert np.all(np.isnan(rgb[0, 0])), "no answer, no colour"
    given = result.assign(ipf_rgb=(("scan_y", "scan_x", "rgb"), np.full((*result.phase.shape, 3), 0.25)))
    assert np.all(orientation_view(given, specimen.intensity).ipf_rgb() == 0.25)


def test_simulated_reflections_sit_on_the_detected_peaks(specimen, peaks):
    """With the true orientation, every strong simulated reflection has a detected peak nearby (same frame)."""
    view = orientation_view(result_of(specimen), specimen.intensity, peaks=peaks)
    iy, ix = 6, 9
    found_kx, found_ky, beam_kx, beam_ky = view.detected(iy, ix)
    sim_kx, sim_ky, intensity = view.simulated(iy, ix)
    strong = intensity > 0.2 * intensity.max()
    assert strong.sum() >= 2 and found_kx.size >= 2
    distance = np.hypot(sim_kx[strong, None] + beam_kx - found_kx[None], sim_ky[strong, None] + beam_ky - found_ky[None])
    matched = distance.min(axis=1) < 0.1  # 1/Å: 2.5 detector pixels
    assert matched.mean() >= 0.5, f"only {matched.sum()} of {strong.sum()} strong reflections have a peak"
    assert view.simulated(0, 0)[0].size == 0, "no answer, nothing simulated"


def test_orientation_view_refuses_a_foreign_result(specimen):
    with pytest.raises(ValueError, match="missing"):
        orientation_view(result_of(specimen).drop_vars("confidence"), specimen.intensity)
    with pytest.raises(ValueError, match="positions along scan_x"):
        orientation_view(result_of(specimen).isel(scan_x=slice(0, 5)), specimen.intensity)


def test_served_orientation_view_shows_the_tapped_pattern(specimen, peaks, page, serve):
    page, log = page
    result = result_of(specimen)
    url = serve(lambda: orientation_view(result, specimen.intensity, peaks=peaks).panel())
    log.allowed_origins.append(url)
    page.goto(f"{url}/app")
    for name in ("orientation-ipf", "orientation-phase", "orientation-confidence", "orientation-ambiguous",
                 "orientation-pattern", "ipf-key-m-3m"):
        wait_for_plot(page, name)
    before = signature(page, "orientation-pattern")
    simulated = signature(page, "orientation-pattern", "size")  # the circles of the simulated reflections
    click_data(page, "orientation-phase", float(specimen.scan_x[13]), float(specimen.scan_y[9]))
    wait_for_change(page, "orientation-pattern", before)
    wait_for_text(page, "[9, 13]")
    wait_for_change(page, "orientation-pattern", simulated, "size")  # another grain and phase: other reflections
    page.mouse.move(1, 1)
    screenshot(page, "orientation-view")
    log.assert_clean()
