"""Readers for detector and community file formats, one module per format."""

from stemkit.io.readers import numpy_file
from stemkit.io.readers import merlin
from stemkit.io.readers import blockfile
from stemkit.io.readers import digitalmicrograph
from stemkit.io.readers import empad
from stemkit.io.readers import hspy
from stemkit.io.readers import arina
from stemkit.io.readers import emd
from stemkit.io.readers import topspin

FORMATS = [
    numpy_file.FORMAT,
    merlin.FORMAT,
    blockfile.FORMAT,
    digitalmicrograph.FORMAT,
    empad.FORMAT,
    hspy.FORMAT,
    arina.FORMAT,
    emd.FORMAT,
    topspin.FORMAT,
]
