"""strain_view: exx, eyy, exy on one symmetric colour range, rotation on its own; a tap shows pattern and reconstruction."""

from __future__ import annotations

import numpy as np
import holoviews as hv
import pytest
import xarray as xr
from scipy import ndimage

from stemkit.physics.specimens import strained_film
from stemkit.viz import strain_view
from stemkit.viz.strain import symmetric_limit
from tests.viz.browser import click_data, screenshot, signature, wait_for_change, wait_for_plot, wait_for_text


@pytest.fixture(scope="module")
def film() -> xr.Dataset:
    return strained_film(scan_shape=(12, 16), pattern_size=64, dose=1e5, seed=0)


def blurred_model(data: xr.DataArray):
    """A stand-in for a model's reconstruction: the pattern blurred (the view only needs ``(iy, ix) -> image``)."""
    return lambda iy, ix: ndimage.gaussian_filter(np.asarray(data[iy, ix].values, dtype=float), 1.5)


def test_symmetric_limit_is_shared_and_centred():
    assert symmetric_limit(np.array([-0.02, 0.01]), np.array([0.005, np.nan]), percentile=100) == pytest.approx(0.02)
    assert symmetric_limit(np.zeros(4)) > 0, "an all-zero map still gets a usable range"


def test_strain_view_colour_ranges(film):
    view = strain_view(film[["exx", "eyy", "exy", "rotation"]], film.intensity)
    every = np.abs(np.concatenate([film[c].values.ravel() for c in ("exx", "eyy", "exy")]))
    limit = 100 * np.percentile(every, 99.5)  # shown in %
    clims = {name: hv.Store.lookup_options("bokeh", element, "plot").kwargs.get("clim")
             or hv.Store.lookup_options("bokeh", element, "style").kwargs.get("clim")
             for name, element in view.map_elements().items()}
    for c in ("exx", "eyy", "exy"):
        assert clims[c] == pytest.approx((-limit, limit))
    bound = np.percentile(np.abs(film.rotation.values), 99.5)
    assert clims["rotation"] == pytest.approx((-bound, bound))


def test_reconstruction_from_dataset_or_function(film):
    model = blurred_model(film.intensity)
    view = strain_view(film[["exx", "eyy", "exy", "rotation"]], film.intensity, reconstruction=model)
    np.testing.assert_allclose(view.reconstructed(3, 4), model(3, 4))
    stored = film.intensity.rename("reconstruction")
    view = strain_view(film[["exx", "eyy", "exy", "rotation"]].assign(reconstruction=stored), film.intensity)
    np.testing.assert_allclose(view.reconstructed(3, 4), film.intensity[3, 4].values)
    assert strain_view(film[["exx", "eyy", "exy", "rotation"]], film.intensity).reconstructed(0, 0) is None
    with pytest.raises(ValueError, match="missing"):
        strain_view(film[["exx", "eyy"]], film.intensity)


def test_served_strain_view_shows_pattern_and_reconstruction(film, page, serve):
    page, log = page
    strain = film[["exx", "eyy", "exy", "rotation"]]
    url = serve(lambda: strain_view(strain, film.intensity, reconstruction=blurred_model(film.intensity)).panel())
    log.allowed_origins.append(url)
    page.goto(f"{url}/app")
    for name in ("strain-exx", "strain-eyy", "strain-exy", "strain-rotation", "strain-pattern", "strain-reconstruction"):
        wait_for_plot(page, name)
    pattern, reconstruction = signature(page, "strain-pattern"), signature(page, "strain-reconstruction")
    click_data(page, "strain-rotation", float(film.scan_x[2]), float(film.scan_y[10]))
    wait_for_change(page, "strain-pattern", pattern)
    wait_for_change(page, "strain-reconstruction", reconstruction)
    wait_for_text(page, "[10, 2]")
    page.mouse.move(1, 1)
    screenshot(page, "strain-view")
    log.assert_clean()
