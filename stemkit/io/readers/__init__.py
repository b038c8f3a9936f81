"""Readers for detector and community file formats, one module per format."""

from stemkit.io.readers import numpy_file

FORMATS = [
    numpy_file.FORMAT,
]
