"""Errors raised while reading and writing files."""

from __future__ import annotations


class FileFormatError(ValueError):
    """A file is missing, truncated, corrupt, or not of the format it was read as."""


class MissingCalibrationError(ValueError):
    """A file lacks a calibration (beam energy, detector or scan step) that stemkit needs.

    The message names each missing value and the ``stemkit.load`` argument that supplies it.
    """

    def __init__(self, path: str, missing: dict[str, str]) -> None:
        self.missing = dict(missing)
        lines = "\n".join(f"  - {what}: pass {arg}" for arg, what in self.missing.items())
        example = ", ".join(f"{arg.split('=')[0]}=..." for arg in self.missing)
        super().__init__(f"{path} does not record every calibration stemkit needs:\n{lines}\ne.g. stemkit.load({path!r}, {example})")
