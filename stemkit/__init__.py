"""stemkit: Jupyter-first 4D-STEM analysis over labelled xarray data.

The canonical dataset is an ``xarray.DataArray`` with dims
``(scan_y, scan_x, ky, kx)``; see :func:`datacube`, :func:`validate`,
:func:`load` and :func:`save`, and the ``.stem`` accessor.
"""

from stemkit.data import ContractError, datacube, validate
from stemkit.io import FileFormatError, MissingCalibrationError, load, save

__version__ = "0.1.0"

__all__ = [
    "ContractError",
    "FileFormatError",
    "MissingCalibrationError",
    "datacube",
    "load",
    "save",
    "validate",
    "__version__",
]
