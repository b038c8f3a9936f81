"""The registry of file formats that :func:`stemkit.load` reads.

Each format module exposes ``FORMAT``, a :class:`Format`; this module collects them.
A format whose suffix another format shares (``.h5``) gives a ``sniff`` that looks
inside the file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stemkit.io.rawcube import RawCube

Reader = Callable[..., RawCube]


def _just_the_file(path: Path) -> list[Path]:
    return [path]


@dataclass(frozen=True)
class Format:
    """One readable file format.

    Attributes
    ----------
    name
        Short name, accepted by ``stemkit.load(..., format=name)``.
    description
        What a person calls it, e.g. "Quantum Detectors Merlin (.mib)".
    suffixes
        Lower-case file suffixes, with the dot.
    read
        ``read(path, *, lazy) -> RawCube``. Raise :class:`FileFormatError` for files
        that are truncated or not of this format.
    sniff
        ``sniff(path) -> bool``, for suffixes shared with other formats; ``None``
        when the suffix alone decides.
    data_files
        The files holding the pixel data (their total size decides lazy loading).
    """

    name: str
    description: str
    suffixes: tuple[str, ...]
    read: Reader
    sniff: Callable[[Path], bool] | None = None
    data_files: Callable[[Path], list[Path]] = field(default=_just_the_file)


def registered_formats() -> list[Format]:
    """Every instrument and community format, in the order they are tried."""
    from stemkit.io import readers

    return readers.FORMATS
