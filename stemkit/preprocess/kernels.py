"""Per-pattern kernels run over the scan in batches: in memory, or chunk by chunk on dask.

A kernel maps a ``(n_y, n_x, ky, kx)`` numpy block to a ``(n_y, n_x, ...)`` block. The
same kernel serves numpy data (in batches of rows, so temporary arrays stay small) and
dask data (once per chunk of whole patterns, via ``map_blocks``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import Any

import dask.array as da
import numpy as np
import torch
import xarray as xr

from stemkit.preprocess import workers as worker_processes

BATCH_BYTES = 64 * 2**20

Kernel = Callable[[np.ndarray], np.ndarray]


def map_patterns(
    data: xr.DataArray,
    kernel: Kernel,
    *,
    out_shape: tuple[int, ...],
    dtype: Any,
    workers: int = 1,
    block_patterns: int | None = None,
    processes: bool = False,
) -> Any:
    """Apply ``kernel`` to every pattern of ``data``; return a numpy or dask array ``(n_y, n_x, *out_shape)``.

    Parameters
    ----------
    data
        Canonical 4D DataArray.
    kernel
        Function of a ``(n_y, n_x, ky, kx)`` block returning ``(n_y, n_x, *out_shape)``.
    out_shape
        Trailing shape of the kernel's output per pattern.
    dtype
        Output dtype.
    workers
        For numpy data: how many blocks to run at once in threads (the kernel must release
        the GIL for this to help, and be thread-safe) or processes (see ``processes``). Dask
        data use dask's scheduler (and, with ``processes``, this many workers per chunk).
    block_patterns
        For numpy data (and dask chunks with ``processes``): about how many patterns each call of ``kernel`` gets (whole rows of the
        scan, or parts of one row). The blocks then do not depend on ``workers``, so a kernel
        whose arithmetic depends on the batch gives the same numbers with any number of
        workers. Default: rows adding up to about 16 MiB, at least one block per worker.
    processes
        Run the blocks in this thread and ``workers − 1`` worker processes
        (:mod:`stemkit.preprocess.workers`: a GIL each; the kernel must be picklable and keep
        no state between blocks) instead of threads. Threads are used where processes are not
        available or the kernel cannot be pickled; the results are the same either way. With
        dask data, each chunk is split into blocks like numpy data and run over the thread
        that dask gives it and the worker processes idle at that moment.
    """
    array = data.data
    if isinstance(array, da.Array):
        if processes:  # each chunk in blocks, over this thread and the idle worker processes
            kernel = partial(_map_block, kernel=kernel, out_shape=tuple(out_shape), dtype=dtype, workers=workers,
                             block_patterns=block_patterns, processes=True)
        new_axes = {2 + i: n for i, n in enumerate(out_shape)}
        return da.map_blocks(
            kernel,
            array,
            dtype=dtype,
            drop_axis=[2, 3],
            new_axis=list(new_axes) if new_axes else None,
            chunks=(*array.chunks[:2], *((n,) for n in out_shape)),
            meta=np.empty((0,) * (2 + len(out_shape)), dtype=dtype),
        )
    return _map_block(array, kernel, out_shape=out_shape, dtype=dtype, workers=workers, block_patterns=block_patterns,
                      processes=processes)


def _map_block(array: np.ndarray, kernel: Kernel, *, out_shape, dtype, workers, block_patterns, processes) -> np.ndarray:
    """:func:`map_patterns` on an in-memory ``(n_y, n_x, ky, kx)`` array (the data, or one dask chunk)."""
    n_y, n_x = array.shape[:2]
    if block_patterns is not None:
        blocks = _pattern_blocks(n_y, n_x, block_patterns)
    else:
        rows_per_batch = max(1, BATCH_BYTES // max(1, array[0].nbytes * 4))
        if workers > 1:  # at least one batch per worker
            rows_per_batch = max(1, min(rows_per_batch, -(-n_y // workers)))
        blocks = [(slice(start, min(n_y, start + rows_per_batch)), slice(None)) for start in range(0, n_y, rows_per_batch)]
    out = np.empty((n_y, n_x, *out_shape), dtype=dtype)

    def run(block: tuple[slice, slice]) -> None:
        out[block] = kernel(np.asarray(array[block]))

    payload = _process_payload(kernel, workers, len(blocks)) if processes else None
    if payload is None:
        _run_blocks(run, blocks, workers)
        return out
    with worker_processes.borrowed(min(workers, len(blocks)) - 1) as remote:
        runners = [run] + [lambda block, w=w: w.run(payload, array[block], out[block]) for w in remote]
        _drain(runners, blocks)
    return out


def _process_payload(kernel: Kernel, workers: int, n_blocks: int) -> tuple[int, bytes] | None:
    """The pickled kernel for worker processes, or None where threads (or this thread alone) run the blocks."""
    if min(int(workers), n_blocks) <= 1 or getattr(_IN_POOL, "active", False) or not worker_processes.available():
        return None
    return worker_processes.kernel_payload(kernel)


def run_in_threads(work: Callable[[Any], Any], parts: Sequence[Any]) -> list[Any]:
    """``[work(part) for part in parts]``, in as many Python threads as ``torch.get_num_threads()``.

    Each thread runs single-threaded torch operations (torch releases the GIL inside them):
    work made of many medium-sized operations uses the cores better so than with intra-op
    threads. Every part is computed as it would be with one thread, so the results do not
    depend on the thread count. The threads are this one and those of the pool kept between
    calls (:func:`_run_blocks`); torch's thread count is restored afterwards.
    """
    threads = torch.get_num_threads()
    results: list[Any] = [None] * len(parts)

    def run(index: int) -> None:
        results[index] = work(parts[index])

    with torch_threads(1):
        _run_blocks(run, list(range(len(parts))), threads)
    return results


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``count`` inside the ``with`` block, restored after it."""
    before = torch.get_num_threads()
    if count != before:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if count != before:
            torch.set_num_threads(before)


def _pattern_blocks(n_y: int, n_x: int, size: int) -> list[tuple[slice, slice]]:
    """Blocks of about ``size`` patterns: whole rows where a row holds fewer, else even parts of each row."""
    size = max(1, int(size))
    if n_x >= size:
        edges = np.linspace(0, n_x, -(-n_x // size) + 1).astype(int)
        return [(slice(y, y + 1), slice(int(a), int(b))) for y in range(n_y) for a, b in zip(edges[:-1], edges[1:])]
    rows = max(1, size // max(1, n_x))
    return [(slice(y, min(n_y, y + rows)), slice(None)) for y in range(0, n_y, rows)]


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_IN_POOL = threading.local()


def _pool(threads: int) -> ThreadPoolExecutor:
    """A process-wide pool of at least ``threads`` threads, kept between calls (no start-up per call)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < threads:
            old, _POOL = _POOL, ThreadPoolExecutor(threads, thread_name_prefix="stemkit-patterns", initializer=_mark_pool_thread)
            if old is not None:
                old.shutdown(wait=False)
        return _POOL


def _mark_pool_thread() -> None:
    _IN_POOL.active = True


def _run_blocks(run: Callable[[Any], None], blocks: list, workers: int) -> None:
    """``run`` every block, in ``workers`` threads at once: this one and ``workers − 1`` of the pool.

    Each thread takes the next block as it finishes one, so a thread slowed by other work on
    the machine takes fewer, and this thread does not wait for pool threads that have not
    started (busy with another call's blocks). Called from a pool thread (a kernel mapping
    patterns itself), the blocks run here, one after the other, so the pool cannot wait on itself.
    """
    workers = min(int(workers), len(blocks))
    if workers <= 1 or getattr(_IN_POOL, "active", False):
        for block in blocks:
            run(block)
        return
    _drain([run] * workers, blocks)


def _drain(runners: list[Callable[[Any], None]], blocks: list) -> None:
    """Every block run by one of ``runners``: the first in this thread, each other in a thread of the pool,
    each taking the next block as it finishes one (see :func:`_run_blocks`)."""
    pending = iter(blocks)
    lock = threading.Lock()
    failed = threading.Event()

    def drain(run: Callable[[Any], None]) -> None:
        while not failed.is_set():
            with lock:
                block = next(pending, None)
            if block is None:
                return
            try:
                run(block)
            except BaseException:
                failed.set()
                raise

    futures = [_pool(len(runners) - 1).submit(drain, run) for run in runners[1:]]
    try:
        drain(runners[0])
    finally:
        for future in futures:
            if not future.cancel():  # one still queued (the pool busy with other calls) has nothing left to do
                future.result()


def _forget_pool_in_child() -> None:
    """In a forked worker process: the parent's pool threads do not exist here; run every block in this thread."""
    global _POOL
    _POOL = None
    _IN_POOL.active = True
