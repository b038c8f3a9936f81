"""report(): one self-contained HTML file whose maps show the pattern under a click, with no Python and no network."""

from __future__ import annotations

import re

import numpy as np
import pytest
import xarray as xr

from stemkit.physics.specimens import polycrystal
from stemkit.viz import report
from stemkit.viz.html import SCRIPT_BODY
from stemkit.viz.report import Binning, choose_binning
from tests.viz.browser import click_data, screenshot, signature, wait_for_change, wait_for_plot, wait_for_text


@pytest.fixture(scope="module")
def specimen() -> xr.Dataset:
    return polycrystal(scan_shape=(24, 32), n_grains=6, pattern_size=64, k_step=0.04, seed=1)


@pytest.mark.parametrize(
    ("shape", "max_mb", "expected"),
    [
        ((24, 32, 64, 64), 100.0, Binning(1, 1)),     # 12.6 MB fits as it is
        ((24, 32, 64, 64), 2.0, Binning(3, 1)),       # 64 px patterns stay; ×2: 12×16 × 16 KiB = 3.1 MB, ×3: 8×10: 1.3 MB
        ((256, 256, 128, 128), 16.0, Binning(9, 2)),  # 128 → 64 px; ×8: 32×32 × 16 KiB = 16.8 MB, ×9: 28×28: 12.8 MB
        ((256, 256, 256, 256), 64.0, Binning(5, 4)),  # 256 → 64 px; ×4: 64×64 × 16 KiB = 67.1 MB, ×5: 51×51: 42.6 MB
    ],
)
def test_choose_binning(shape, max_mb, expected):
    assert choose_binning(shape, max_mb * 1e6) == expected


def test_choose_binning_refuses_an_impossible_bound():
    with pytest.raises(ValueError, match="max_cube_mb"):
        choose_binning((4, 4, 64, 64), 100.0)


def test_report_needs_one_cube_and_a_map(specimen, tmp_path):
    with pytest.raises(ValueError, match="exactly one 4D cube"):
        report([specimen.thickness], tmp_path / "a.html")
    with pytest.raises(ValueError, match="at least one map"):
        report([specimen.intensity], tmp_path / "b.html")
    with pytest.raises(ValueError, match="dims"):
        report([specimen.intensity, specimen.quaternion], tmp_path / "c.html")


def test_report_is_self_contained_and_states_its_size(specimen, tmp_path):
    bf = specimen.intensity.stem.virtual_image(outer=0.1).rename("bright field")
    path = report([bf, specimen.intensity, specimen[["phase", "quaternion"]]], tmp_path / "r.html", max_cube_mb=2.0)
    html = path.read_text()
    tags = SCRIPT_BODY.sub(r"\1\2", html)  # the page's own tags, not strings inside its inline JavaScript
    assert "<script" in tags and not re.findall(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=\"(?!data:)", tags)
    stated = float(re.search(r"This file: ([0-9.]+) MB", html).group(1))
    assert abs(stated - path.stat().st_size / 1e6) < 0.05
    assert re.search(r"binned \S{1,8}3 over the scan", html) and "left out: quaternion" in html
    assert path.stat().st_size < 2.0e6 * 4 / 3 + 3e6  # the bound, base64, and bokeh's inline JavaScript
    with pytest.raises(FileExistsError, match="overwrite=True"):
        report([bf, specimen.intensity], path)


def test_saved_report_shows_the_clicked_pattern_offline(specimen, tmp_path, page):
    page, log = page
    bf = specimen.intensity.stem.virtual_image(outer=0.1).rename("bright field")
    path = report({"bright field": bf, "ground truth": specimen[["phase", "thickness"]], "cube": specimen.intensity},
                  tmp_path / "report.html", max_cube_mb=2.0)
    page.goto(path.as_uri())
    wait_for_plot(page, "report-pattern")
    before = signature(page, "report-pattern")
    scan_x, scan_y = specimen.scan_x.values, specimen.scan_y.values
    click_data(page, "report-map-bright field", scan_x[20], scan_y[16])
    after = wait_for_change(page, "report-pattern", before)
    # the page bins the scan ×3: probe (16, 20) is in bin (5, 6), whose centre is nearest to the click
    binned = specimen.intensity.stem.bin(scan=3, reduce="mean").isel(scan_y=5, scan_x=6).values.astype(np.float32)
    assert page.evaluate("document.body.dataset.stemkitProbe") == "5,6"
    wait_for_text(page, "[5, 6]")
    assert after["length"] == 64 * 64
    shown = np.array(page.evaluate(
        "() => Array.from(Bokeh.documents[0].get_model_by_name('report-pattern').renderers"
        ".find(r => r.data_source && 'image' in r.data_source.data).data_source.data.image[0])"), dtype=np.float32)
    positive = binned > shown.min()
    np.testing.assert_allclose(shown[positive.ravel()], binned.ravel()[positive.ravel()], rtol=1e-6)
    click_data(page, "report-map-ground truth: phase", scan_x[2], scan_y[3])
    wait_for_text(page, "[1, 0]")
    page.mouse.move(1, 1)
    screenshot(page, "report-offline")
    log.assert_clean()
