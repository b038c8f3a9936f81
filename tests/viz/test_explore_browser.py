"""The served explore app in headless chromium: a tap shows that pattern, a drawn detector recomputes the image."""

from __future__ import annotations

import numpy as np

from stemkit.viz import explore
from stemkit.physics.specimens import polycrystal
from tests.viz.browser import (
    FIND_VIEW,
    click_data,
    drag_data,
    screenshot,
    signature,
    to_screen,
    wait_for_change,
    wait_for_plot,
    wait_for_text,
)


def dask_cube():
    """A small lazy polycrystal (Cu and Cu2O grains), in chunks of 6×16 probe positions."""
    specimen = polycrystal(scan_shape=(24, 32), n_grains=6, pattern_size=64, k_step=0.04, lazy=True, seed=1)
    return specimen["intensity"].chunk({"scan_y": 6, "scan_x": 16})


def test_served_explore_links_map_pattern_and_detector(page, serve):
    page, log = page
    cube = dask_cube()
    url = serve(lambda: explore(cube).panel())
    log.allowed_origins.append(url)
    page.goto(f"{url}/app")
    wait_for_plot(page, "explore-map")
    wait_for_plot(page, "explore-pattern")
    # the BF image is computed chunk by chunk after the page opens: wait until every pixel is finite
    wait_for_text(page, "BF: disk")
    image = signature(page, "explore-map")
    image = image if image["finite"] == 24 * 32 else wait_for_change(page, "explore-map", image)
    assert image["finite"] == 24 * 32

    pattern = signature(page, "explore-pattern")
    x, y = float(cube.scan_x[3]), float(cube.scan_y[13])
    click_data(page, "explore-map", x, y)
    changed = wait_for_change(page, "explore-pattern", pattern)
    assert changed["length"] == 64 * 64
    wait_for_text(page, "[13, 3]")
    expected = cube[13, 3].values
    assert np.isclose(changed["total"], _weighted_sum(np.clip(expected, _log_floor(expected), None)), rtol=1e-4)

    # two taps in quick succession: the second is a double tap to bokeh, and selects too
    click_data(page, "explore-map", float(cube.scan_x[20]), float(cube.scan_y[2]))
    click_data(page, "explore-map", float(cube.scan_x[9]), float(cube.scan_y[17]))
    wait_for_text(page, "[17, 9]")

    # "follow the pointer": the pattern under the pointer, no tap
    page.locator(".bk-label", has_text="follow the pointer").evaluate("(label) => label.previousElementSibling.click()")
    page.wait_for_function(f"(name) => {{ {FIND_VIEW} return stemkitFindView(name).model.subscribed_events.has('mousemove'); }}",
                           arg="explore-map")  # from then on the page sends pointer moves
    page.mouse.move(*to_screen(page, "explore-map", float(cube.scan_x[27]), float(cube.scan_y[5])))
    wait_for_text(page, "[5, 27]")

    drag_data(page, "explore-pattern", (0.4, 0.4), (1.0, 1.0))  # a circle off the direct beam: a dark-field image
    recomputed = wait_for_change(page, "explore-map", image)
    wait_for_text(page, "drawn: disk")
    recomputed = signature(page, "explore-map")
    assert recomputed != image and recomputed["finite"] == 24 * 32
    page.mouse.move(1, 1)  # no hover tooltip in the screenshot
    screenshot(page, "explore-served")
    log.assert_clean()


def _weighted_sum(values: np.ndarray) -> float:
    flat = np.asarray(values, dtype=float).ravel()
    return float(np.sum(flat * ((np.arange(flat.size) % 13) + 1)))


def _log_floor(values: np.ndarray) -> float:
    positive = values[values > 0]
    return float(np.percentile(positive, 0.5))
