"""The data contract: building, validating and working with 4D-STEM DataArrays.

A dataset is an ``xarray.DataArray`` named ``intensity`` with dims
``("scan_y", "scan_x", "ky", "kx")``: probe positions in nm and reciprocal-space
coordinates in 1/Å with 0 at the direct beam. See ``DESIGN.md``.
"""

from stemkit.data.contract import DIMS, K_DIMS, SCAN_DIMS, ContractError
from stemkit.data.datacube import datacube
from stemkit.data.validate import validate
from stemkit.data import accessor as _accessor  # noqa: F401  (registers ``.stem``)

__all__ = ["DIMS", "K_DIMS", "SCAN_DIMS", "ContractError", "datacube", "validate"]
