"""Write bokeh layouts as single self-contained HTML files that fetch nothing from a network.

All JavaScript and CSS are inlined (bokeh's ``INLINE`` resources). Importing panel
registers a module shim script (``static/extensions/panel/...es-module-shims``) that bokeh
then adds to every page, although only panel's own ESM components need it; it is removed
here, and the finished page is checked for any remaining external reference.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from bokeh.embed import file_html
from bokeh.model import Model
from bokeh.resources import INLINE

PANEL_SHIM = re.compile(r'<script[^>]*src="static/extensions/panel/[^"]*es-module-shims[^"]*"[^>]*>\s*</script>\s*')
SCRIPT_BODY = re.compile(r"(<script\b[^>]*>).*?(</script>)", re.S | re.I)
EXTERNAL_REFERENCE = re.compile(r'<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*"(?!data:|#)([^"]+)"', re.I)


class ExternalResourceError(RuntimeError):
    """A page would fetch something from outside the file."""


def standalone_html(model: Model, *, title: str) -> str:
    """Return a complete HTML page holding ``model`` with every resource inline."""
    html = PANEL_SHIM.sub("", file_html(model, INLINE, title=title))
    # look at the page's own tags, not at strings inside inline JavaScript
    external = EXTERNAL_REFERENCE.findall(SCRIPT_BODY.sub(r"\1\2", html))
    if external:
        raise ExternalResourceError(f"the page would load {external[:5]}; every resource must be inline")
    return html


def save_html(model: Model, path: str | os.PathLike, *, title: str = "stemkit", overwrite: bool = False) -> Path:
    """Write ``model`` to ``path`` as one self-contained HTML file.

    Parameters
    ----------
    model
        A bokeh layout or figure (holoviews objects: ``holoviews.render(obj)`` first).
    path
        Destination ``.html`` file.
    title
        The page title.
    overwrite
        Replace an existing file; without it an existing path raises ``FileExistsError``.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    html = standalone_html(model, title=title)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    return path
