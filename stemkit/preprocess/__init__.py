"""Preprocessing: direct-beam centring, virtual detectors, centre of mass, Bragg peaks."""

from stemkit.preprocess.centering import beam_position, beam_radius, center, fit_descan
from stemkit.preprocess.com import center_of_mass
from stemkit.preprocess.peaks import find_peaks
from stemkit.preprocess.detectors import Annulus, Circle, Mask, Rectangle, virtual_image

__all__ = [
    "Annulus",
    "Circle",
    "Mask",
    "Rectangle",
    "beam_position",
    "beam_radius",
    "center",
    "center_of_mass",
    "find_peaks",
    "fit_descan",
    "virtual_image",
]
