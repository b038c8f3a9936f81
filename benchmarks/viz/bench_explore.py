"""How responsive is ``stemkit.viz.explore`` on a dask-backed 256×256×128×128 zarr cube?

Usage::

    .venv/bin/python benchmarks/viz/make_cube.py /tmp/stemkit-viz-bench/cube.zarr
    .venv/bin/python benchmarks/viz/bench_explore.py /tmp/stemkit-viz-bench/cube.zarr
    rm -rf /tmp/stemkit-viz-bench

Measures, on the served app in headless chromium (Debian's chromium via playwright):

- the time from a click on the map to the new pattern being in the page (the bokeh data
  source changed), for taps that need a new chunk read (cold) and taps inside a chunk
  already read (warm: same or neighbouring scan rows);
- in Python alone, reading one pattern (``PatternReader.pattern``) cold and warm;
- the full BF virtual image, computed chunk by chunk with progress, and the peak memory
  of the process (the cube is never loaded whole).
"""

from __future__ import annotations

import resource
import socket
import sys
import time

import numpy as np
import panel as pn

import stemkit
from stemkit.viz import Explorer, explore
from stemkit.viz.patterns import PatternReader

sys.path.insert(0, ".")
from tests.viz.browser import CHROMIUM_ARGS, chromium_path, signature, to_screen, wait_for_plot, wait_for_text  # noqa: E402

N_TAPS = 12
# Timed inside the page as well (no playwright round trips): from the mouse press to the moment bokeh
# applies the new title of the pattern (sent by the server together with the new image).
IN_PAGE_COLD: list[float] = []
IN_PAGE_WARM: list[float] = []
IN_PAGE_TIMER = """() => {
  document.addEventListener('pointerdown', () => { window.__stemkit_pressed = performance.now(); }, true);
  for (const doc of Bokeh.documents) {
    for (const model of doc.all_models) {
      if (model.name === 'explore-pattern' && model.title) {
        model.title.property('text').change.connect(() => { window.__stemkit_shown = performance.now(); });
      }
    }
  }
}"""


SERVER_MS: list[float] = []  # from the tap event reaching Python to its pattern handed to the websocket


def time_server_side() -> None:
    """Record how long the server spends on each tap (:meth:`Explorer._on_map_event`, which reads the pattern and
    puts it, its title and the marker into the page's models)."""
    handle = Explorer._on_map_event

    def timed(self, event):
        start = time.perf_counter()
        handle(self, event)
        SERVER_MS.append(1000 * (time.perf_counter() - start))

    Explorer._on_map_event = timed


def python_reads(data) -> tuple[list[float], list[float]]:
    reader = PatternReader(data)
    rng = np.random.default_rng(0)
    cold, warm = [], []
    for _ in range(N_TAPS):
        iy, ix = (int(v) for v in rng.integers(0, 256, size=2))
        start = time.perf_counter()
        reader.pattern(iy, ix)
        cold.append(1000 * (time.perf_counter() - start))
        start = time.perf_counter()
        reader.pattern(iy, (ix + 7) % 256)
        warm.append(1000 * (time.perf_counter() - start))
    return cold, warm


def browser_taps(data) -> tuple[list[float], list[float], float]:
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    timing = {}

    def app():
        timing["start"] = time.perf_counter()
        return explore(data).panel()

    server = pn.serve({"app": app}, port=port, address="127.0.0.1", websocket_origin=[f"127.0.0.1:{port}"],
                      threaded=True, show=False)
    x, y = data.scan_x.values, data.scan_y.values
    rng = np.random.default_rng(1)
    cold, warm = [], []
    in_page = {id(cold): IN_PAGE_COLD, id(warm): IN_PAGE_WARM}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/app")
        wait_for_plot(page, "explore-pattern")
        wait_for_text(page, "BF: disk", timeout_ms=600_000)  # the full BF image, chunk by chunk
        bf_seconds = time.perf_counter() - timing["start"]
        page.evaluate(IN_PAGE_TIMER)
        for _ in range(N_TAPS):
            iy, ix = (int(v) for v in rng.integers(0, 256, size=2))
            for ms, (ty, tx) in ((cold, (iy, ix)), (warm, (iy, (ix + 9) % 256))):
                before = signature(page, "explore-pattern")
                start = time.perf_counter()
                page.mouse.click(*to_screen(page, "explore-map", float(x[tx]), float(y[ty])))
                wait_for_text(page, f"[{ty}, {tx}]", timeout_ms=10_000)  # the title, sent with the new image
                ms.append(1000 * (time.perf_counter() - start))
                in_page[id(ms)].append(page.evaluate("window.__stemkit_shown - window.__stemkit_pressed"))
                assert signature(page, "explore-pattern") != before, "the title changed but not the image"
        browser.close()
    server.stop()
    return cold, warm, bf_seconds


def summary(values: list[float]) -> str:
    v = np.array(values)
    return f"median {np.median(v):.0f} ms, max {v.max():.0f} ms (n={v.size})"


def main(path: str) -> None:
    data = stemkit.load(path, lazy=True)
    print(f"cube {data.shape} {data.dtype}, chunks {data.data.chunksize}, {data.nbytes / 2**30:.2f} GiB")
    cold, warm = python_reads(data)
    print(f"python, one pattern, new chunk:   {summary(cold)}")
    print(f"python, one pattern, cached chunk: {summary(warm)}")
    time_server_side()
    cold, warm, bf = browser_taps(data)
    print(f"served app, full BF image (open to done): {bf:.0f} s")
    print(f"served app, click to pattern shown, new chunk:    {summary(cold)}")
    print(f"served app, click to pattern shown, cached chunk: {summary(warm)}")
    print(f"  timed in the page (press -> new title applied), new chunk: {summary(IN_PAGE_COLD)}")
    print(f"  timed in the page (press -> new title applied), nearby:    {summary(IN_PAGE_WARM)}")
    print(f"  server side (tap event in -> pattern handed to the websocket), new chunk: {summary(SERVER_MS[0::2])}")
    print(f"  server side (tap event in -> pattern handed to the websocket), nearby:    {summary(SERVER_MS[1::2])}")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/stemkit-viz-bench/cube.zarr")
