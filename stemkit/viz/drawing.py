"""Virtual detectors drawn on a diffraction pattern: from a dragged box to a detector, and back to an outline.

Dragging a box on the pattern (bokeh's box-select tool) defines the detector:

- ``"box"``: the box itself, a :class:`~stemkit.preprocess.Rectangle`;
- ``"circle"``: the disk centred on the box, of radius half the box's larger side;
- ``"annulus"``: the same outer circle, with the inner radius ``ratio`` times the outer.
"""

from __future__ import annotations

import holoviews as hv
import numpy as np

from stemkit.preprocess.detectors import Annulus, Circle, Detector, Rectangle

SHAPES = ("circle", "annulus", "box")
OUTLINE = {"color": "#00e5ff", "line_width": 2}


def detector_from_box(shape: str, bounds: tuple[float, float, float, float], *, ratio: float = 0.5) -> Detector:
    """The detector a dragged box defines.

    Parameters
    ----------
    shape
        ``"circle"``, ``"annulus"`` or ``"box"``.
    bounds
        ``(kx0, ky0, kx1, ky1)`` in 1/Å, in any order (bokeh gives left, bottom, right, top).
    ratio
        Inner over outer radius of an annulus, in (0, 1).
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown detector shape {shape!r}; use one of {SHAPES}")
    x0, y0, x1, y1 = (float(v) for v in bounds)
    kx = (min(x0, x1), max(x0, x1))
    ky = (min(y0, y1), max(y0, y1))
    if shape == "box":
        return Rectangle(ky=ky, kx=kx)
    center = ((ky[0] + ky[1]) / 2, (kx[0] + kx[1]) / 2)
    radius = max(kx[1] - kx[0], ky[1] - ky[0]) / 2
    if radius <= 0:
        raise ValueError("the dragged box is empty; drag a box on the pattern to draw a detector")
    if shape == "circle":
        return Circle(radius=radius, center=center)
    if not 0 < ratio < 1:
        raise ValueError(f"the annulus ratio must lie in (0, 1); got {ratio!r}")
    return Annulus(inner=ratio * radius, outer=radius, center=center)


def outline(detector: Detector | None) -> hv.Overlay:
    """The detector's outline on (kx, ky) for overlaying on a pattern; empty for masks and None."""
    kdims = ["kx", "ky"]
    if isinstance(detector, Circle):
        parts = [_circle(detector.center, detector.radius)]
    elif isinstance(detector, Annulus):
        parts = [_circle(detector.center, detector.outer), _circle(detector.center, detector.inner)]
    elif isinstance(detector, Rectangle):
        (y0, y1), (x0, x1) = detector.ky, detector.kx
        parts = [[(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]]
    else:
        parts = []
    return hv.Path(parts, kdims=kdims).opts(**OUTLINE)


def describe(detector: Detector) -> str:
    """A short human description with sizes in 1/Å."""
    if isinstance(detector, Circle):
        return f"disk r = {detector.radius:.3g} 1/Å at (ky, kx) = ({detector.center[0]:.3g}, {detector.center[1]:.3g})"
    if isinstance(detector, Annulus):
        return (f"annulus {detector.inner:.3g}–{detector.outer:.3g} 1/Å at (ky, kx) = "
                f"({detector.center[0]:.3g}, {detector.center[1]:.3g})")
    if isinstance(detector, Rectangle):
        return f"box ky {detector.ky[0]:.3g}…{detector.ky[1]:.3g}, kx {detector.kx[0]:.3g}…{detector.kx[1]:.3g} 1/Å"
    return type(detector).__name__.lower()


def _circle(center: tuple[float, float], radius: float, n: int = 96) -> np.ndarray:
    angle = np.linspace(0, 2 * np.pi, n)
    return np.column_stack([center[1] + radius * np.cos(angle), center[0] + radius * np.sin(angle)])
