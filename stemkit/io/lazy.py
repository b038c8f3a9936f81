"""Chunking rules for lazy (dask) loading: whole patterns per chunk, about 32 MiB each."""

from __future__ import annotations

TARGET_CHUNK_BYTES = 32 * 2**20
LAZY_THRESHOLD_BYTES = 2**30
INNER_PATTERNS = 16  # patterns per inner chunk of a sharded zarr store: what one pattern read decodes


def pattern_chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunk sizes over a ``(..., ky, kx)`` array that keep whole patterns and whole scan rows when they fit.

    Works for 4D ``(scan_y, scan_x, ky, kx)`` and flat 3D ``(n, ky, kx)`` stacks.
    """
    *scan, n_ky, n_kx = shape
    per_pattern = max(1, n_ky * n_kx * itemsize)
    patterns = max(1, TARGET_CHUNK_BYTES // per_pattern)
    if len(scan) == 1:
        return (min(scan[0], patterns), n_ky, n_kx)
    n_y, n_x = scan
    if patterns >= n_x:
        return (max(1, min(n_y, patterns // n_x)), n_x, n_ky, n_kx)
    return (1, patterns, n_ky, n_kx)


def inner_chunks(shard: tuple[int, ...]) -> tuple[int, ...]:
    """The inner chunks of a zarr shard of whole patterns: one scan row, at most :data:`INNER_PATTERNS` patterns.

    stemkit's zarr files are sharded: a dask chunk (the shard, ~32 MiB) is what a computation
    reads, while one pattern (a dashboard's tap) decodes only its inner chunk of ~1 MiB. The
    inner size along x divides the shard's.
    """
    *scan, n_ky, n_kx = shard
    last = scan[-1]
    along_x = max(d for d in range(1, min(last, INNER_PATTERNS) + 1) if last % d == 0)
    return (*([1] * (len(scan) - 1)), along_x, n_ky, n_kx)
