"""stemkit: Jupyter-first 4D-STEM analysis over labelled xarray data.

The canonical dataset is an ``xarray.DataArray`` with dims
``(scan_y, scan_x, ky, kx)``; see :func:`datacube`, :func:`validate`,
:func:`load` and :func:`save`, and the ``.stem`` accessor.
"""

from stemkit.data import ContractError, datacube, validate
from stemkit.io import FileFormatError, MissingCalibrationError, load, save

__version__ = "0.1.0"

# The methods and views import torch, scikit-learn or holoviews: loaded on first use, so that
# ``import stemkit`` (and reading a file) stays quick.
_LAZY = {
    "find_peaks": "stemkit.preprocess",
    "center": "stemkit.preprocess",
    "virtual_image": "stemkit.preprocess",
    "OrientationMapper": "stemkit.orientation",
    "disorientation": "stemkit.orientation",
    "DivisiveClustering": "stemkit.clustering",
    "CCSTAE": "stemkit.strain",
    "report": "stemkit.viz",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stemkit' has no attribute {name!r}")

__all__ = [
    "ContractError",
    "FileFormatError",
    "MissingCalibrationError",
    "datacube",
    "load",
    "save",
    "validate",
    "__version__",
    *_LAZY,
]
