"""Reading detector and community files into the canonical DataArray, and saving results."""

from stemkit.io.errors import FileFormatError, MissingCalibrationError
from stemkit.io.load import load, supported_formats
from stemkit.io.resumable import save_by_chunks
from stemkit.io.save import save

__all__ = ["FileFormatError", "MissingCalibrationError", "load", "save", "save_by_chunks", "supported_formats"]
