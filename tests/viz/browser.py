"""Driving bokeh pages in headless chromium: find a plot by name, click and drag in data coordinates,
and read back what a glyph shows.

Plots are found by their bokeh ``name`` (stemkit's views name every figure), by walking the
view tree from ``Bokeh.index.roots``; clicks go through the real mouse, at the screen position
bokeh's own scales give for a data coordinate.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "viz"
CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

FIND_VIEW = """
function stemkitFindView(name) {
  for (const doc of Bokeh.documents) {
    const model = doc.get_model_by_name(name);
    if (!model) continue;
    let found = null;
    const visit = (v) => {
      if (found) return;
      if (v.model === model) { found = v; return; }
      for (const c of (v.children ? v.children() : [])) visit(c);
    };
    for (const r of Bokeh.index.roots) visit(r);
    if (found) return found;
  }
  return null;
}
"""

PLOT_READY = FIND_VIEW + "return stemkitFindView(name) !== null;"

TO_SCREEN = FIND_VIEW + """
const view = stemkitFindView(args.name);
const rect = view.canvas_view.el.getBoundingClientRect();
return [rect.left + view.frame.x_scale.compute(args.x), rect.top + view.frame.y_scale.compute(args.y)];
"""

# A checksum of what the first image glyph (or the named column of the first glyph) of a plot
# shows: sum of finite values, weighted by position so that moved values change it too.
SIGNATURE = FIND_VIEW + """
const view = stemkitFindView(args.name);
if (!view) return null;
for (const renderer of view.model.renderers) {
  const data = renderer.data_source ? renderer.data_source.data : null;
  if (!data || !(args.column in data)) continue;
  let values = data[args.column];
  if (args.column === 'image') values = values[0];
  let total = 0, n = 0;
  for (let i = 0; i < values.length; i++) {
    const v = Number(values[i]);
    if (Number.isFinite(v)) { total += v * ((i % 13) + 1); n += 1; }
  }
  return {total: total, finite: n, length: values.length};
}
return null;
"""


def _function(body: str, params: str) -> str:
    return f"({params}) => {{ {body} }}"


def chromium_path() -> str | None:
    """Debian's chromium, if installed."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageLog:
    """What went wrong on a page: uncaught JS errors, console errors, failed and external requests."""

    allowed_origins: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)

    def allows(self, url: str) -> bool:
        scheme = urlparse(url).scheme
        if scheme in ("file", "data", "blob", "about"):
            return True
        return any(url.startswith(origin) for origin in self.allowed_origins)

    def assert_clean(self) -> None:
        assert not self.errors, f"JavaScript errors on the page: {self.errors}"
        assert not self.external, f"the page tried to reach the network: {self.external}"
        assert not self.failed, f"requests failed: {self.failed}"


def attach_log(context, page) -> PageLog:
    """Record errors and requests of ``page``; block (and record) every request off the allowed origins."""
    log = PageLog()

    def route(route_, request):
        if log.allows(request.url):
            route_.continue_()
        else:
            log.external.append(request.url)
            route_.abort()

    context.route("**/*", route)
    page.on("console", lambda message: message.type == "error" and log.errors.append(message.text))
    page.on("pageerror", lambda error: log.errors.append(str(error)))
    page.on("requestfailed", lambda request: log.allows(request.url) and log.failed.append(
        f"{request.url}: {request.failure}"))
    return log


HAS_TEXT = """
for (const doc of Bokeh.documents) {
  for (const model of doc.all_models) {
    const text = model.text;
    if (typeof text === 'string' && text.includes(args.text)) return true;
    if (text && typeof text.text === 'string' && text.text.includes(args.text)) return true;
  }
}
return false;
"""


def wait_for_text(page, text: str, timeout_ms: int = 30_000) -> None:
    """Wait until some bokeh model of the page (a title, a text pane) shows ``text``."""
    page.wait_for_function(_function(HAS_TEXT, "args"), arg={"text": text}, timeout=timeout_ms)


def wait_for_plot(page, name: str, timeout_ms: int = 60_000) -> None:
    page.wait_for_function(_function(PLOT_READY, "name"), arg=name, timeout=timeout_ms)


def to_screen(page, name: str, x: float, y: float) -> tuple[float, float]:
    return tuple(page.evaluate(_function(TO_SCREEN, "args"), {"name": name, "x": x, "y": y}))


def click_data(page, name: str, x: float, y: float) -> None:
    """Click plot ``name`` at data coordinates (x, y)."""
    page.mouse.click(*to_screen(page, name, x, y))


def drag_data(page, name: str, start: tuple[float, float], end: tuple[float, float], steps: int = 8) -> None:
    """Drag with the left button on plot ``name`` from one data point to another."""
    x0, y0 = to_screen(page, name, *start)
    x1, y1 = to_screen(page, name, *end)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=steps)
    page.mouse.up()


def signature(page, name: str, column: str = "image") -> dict | None:
    """A checksum of the values plot ``name`` shows in ``column`` (``"image"`` for image glyphs)."""
    return page.evaluate(_function(SIGNATURE, "args"), {"name": name, "column": column})


def wait_for_change(page, name: str, before: dict | None, column: str = "image", timeout_ms: int = 20_000) -> dict:
    """Wait until the signature of plot ``name`` differs from ``before``; return the new one."""
    body = SIGNATURE.replace("return {total", "const s = {total") .replace(
        "length: values.length};", "length: values.length}; return JSON.stringify(s) !== JSON.stringify(args.before) ? s : null;")
    page.wait_for_function(_function(body, "args"), arg={"name": name, "column": column, "before": before},
                           timeout=timeout_ms)
    return signature(page, name, column)


def screenshot(page, name: str) -> Path:
    """Keep a full-page screenshot under ``test-artifacts/viz/``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
