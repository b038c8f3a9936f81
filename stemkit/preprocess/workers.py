"""Worker processes for pattern kernels: forked once, fed whole blocks through shared memory.

Threads of one process share its GIL. A kernel made of many small torch and numpy calls
(the peak finder makes several hundred per block) re-acquires it after every call, and
two threads hand it back and forth: a second thread added only 1.4-1.7× to the peak
finder where a second process adds 1.8-1.9×. A worker process has a GIL of its own.

The workers are forked from this process the first time they are needed and kept for the
rest of the session (a fork is cheap: nothing is imported again). Each has a block of
shared memory (``memfd``) that grows as needed: the parent copies a block of patterns into
it, the worker runs the kernel there and writes the result back into it. A kernel is
pickled once and kept by the worker (the last :data:`KERNELS_KEPT`), so only blocks
travel. Workers run torch single-threaded, ignore Ctrl-C (the parent decides), and end
when the parent closes their socket or exits.

Process workers need ``fork`` and ``memfd_create`` (Linux); elsewhere, with
``STEMKIT_PROCESS_WORKERS=0`` in the environment, in a worker itself, in a daemonic process,
or for a kernel that cannot be pickled, :func:`stemkit.preprocess.kernels.map_patterns`
runs threads instead.

What a kernel may rely on: its own attributes (pickled with it) and the module globals as
they were when the worker was forked; not state it changes between blocks, nor globals
changed later. A fork copies only the forking thread: a lock that another thread of this
process held at that moment stays held in the worker. The fork happens once, at the first
call that needs workers (typically ``find_peaks`` on the main thread); should a worker hang
or fail, ``STEMKIT_PROCESS_WORKERS=0`` goes back to threads.
"""

from __future__ import annotations

import atexit
import mmap
import multiprocessing
import os
import pickle
import signal
import socket
import struct
import threading
import traceback
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

KERNELS_KEPT = 8  # pickled kernels a worker keeps for later blocks
ALIGN = 4096  # byte alignment of the result behind the input in the shared block
MAX_WORKERS = max(1, (os.cpu_count() or 2) - 1)  # worker processes alive at once
ENABLED = os.environ.get("STEMKIT_PROCESS_WORKERS", "1").strip().lower() not in ("0", "false", "no", "off")

_HEADER = struct.Struct("!Q")
_IN_WORKER = False
_LOCK = threading.Lock()
_IDLE: list["WorkerProcess"] = []
_OPEN: "weakref.WeakSet[WorkerProcess]" = weakref.WeakSet()  # parent sides, closed in every later child
_TOKENS: "weakref.WeakKeyDictionary[Any, tuple[int, bytes]]" = weakref.WeakKeyDictionary()
_NEXT_TOKEN = [0]


class WorkerError(RuntimeError):
    """A worker process ended, or could not be reached, while running a block."""


def available() -> bool:
    """Whether blocks can run in worker processes here (see the module docstring).

    Not in a daemonic process (a dask-distributed worker, a multiprocessing pool's), which
    may not have children of its own.
    """
    return (ENABLED and not _IN_WORKER and hasattr(os, "memfd_create") and "fork" in multiprocessing.get_all_start_methods()
            and not multiprocessing.current_process().daemon)


def kernel_payload(kernel: Callable) -> tuple[int, bytes] | None:
    """A token and the pickled ``kernel`` (made once per kernel object), or None if it cannot be pickled."""
    with _LOCK:
        try:
            cached = _TOKENS.get(kernel)
        except TypeError:  # not weakly referenceable: pickled on every call would cost too much
            return None
        if cached is None:
            try:
                payload = pickle.dumps(kernel, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:  # closures, lambdas, open handles: the caller runs threads instead
                return None
            _NEXT_TOKEN[0] += 1
            cached = _TOKENS[kernel] = (_NEXT_TOKEN[0], payload)
        return cached


@contextmanager
def borrowed(count: int) -> Iterator[list["WorkerProcess"]]:
    """Up to ``count`` worker processes for the ``with`` block (idle ones, else newly forked), returned after it.

    At most one worker per core but this one is kept in all (:data:`MAX_WORKERS`): calls made
    at the same time (dask chunks in threads) share them, and one finding none idle gets
    fewer, or none. A worker that failed is closed rather than returned; a later call forks
    a new one.
    """
    with _LOCK:
        taken = [_IDLE.pop() for _ in range(min(count, len(_IDLE)))]
        new = max(0, min(count - len(taken), MAX_WORKERS - len(_OPEN)))
    try:
        taken.extend(WorkerProcess() for _ in range(new))
        yield taken
    finally:
        with _LOCK:
            for worker in taken:
                if worker.healthy:
                    _IDLE.append(worker)
                else:
                    worker.close()


def shutdown() -> None:
    """Close every idle worker process (they end when their socket closes)."""
    with _LOCK:
        idle, _IDLE[:] = list(_IDLE), []
    for worker in idle:
        worker.close()


atexit.register(shutdown)


class WorkerProcess:
    """One forked process that runs kernels on blocks put into its shared memory."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        context = multiprocessing.get_context("fork")
        self.process = context.Process(target=_serve, args=(theirs, ours), name="stemkit-worker", daemon=True)
        self.process.start()
        theirs.close()
        self.socket = ours
        self.buffer: mmap.mmap | None = None
        self.kernels: OrderedDict[int, None] = OrderedDict()
        self.healthy = True
        _OPEN.add(self)

    def run(self, payload: tuple[int, bytes], source: np.ndarray, into: np.ndarray) -> None:
        """``into[...] = kernel(source)``, computed in the worker; ``payload`` is the kernel's :func:`kernel_payload`."""
        source = np.asarray(source)
        offset = -(-source.nbytes // ALIGN) * ALIGN
        try:
            self._reserve(offset + into.nbytes)
            np.copyto(np.ndarray(source.shape, source.dtype, buffer=self.buffer), source)
            token, pickled = payload
            sent = pickled if token not in self.kernels else None
            _send(self.socket, ("run", token, sent, source.shape, source.dtype.str, into.shape, into.dtype.str, offset))
            if sent is not None:
                self.kernels[token] = None
                while len(self.kernels) > KERNELS_KEPT:
                    self.kernels.popitem(last=False)
            else:
                self.kernels.move_to_end(token)
            reply, _ = _receive(self.socket)
        except BaseException as error:  # a lost worker, or an interrupt mid-block: its state is unknown
            self.healthy = False
            if isinstance(error, (OSError, EOFError)):
                raise WorkerError(self._lost_message()) from error
            raise
        if reply[0] == "error":
            raise _rebuilt(*reply[1:])
        into[...] = np.ndarray(into.shape, into.dtype, buffer=self.buffer, offset=offset)

    def close(self) -> None:
        """End the worker: close its socket (it exits on the end of file) and wait briefly for it."""
        self.healthy = False
        _OPEN.discard(self)
        self.socket.close()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        if self.buffer is not None:
            self.buffer.close()

    def _reserve(self, nbytes: int) -> None:
        """Shared memory of at least ``nbytes`` for the worker (a new ``memfd`` sent to it when larger is needed)."""
        if self.buffer is not None and len(self.buffer) >= nbytes:
            return
        size = -(-max(nbytes, 2 * len(self.buffer) if self.buffer is not None else 0) // ALIGN) * ALIGN
        fd = os.memfd_create("stemkit-block", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            buffer = mmap.mmap(fd, size)
            _send(self.socket, ("buffer", size), fds=[fd])
        finally:
            os.close(fd)
        if self.buffer is not None:
            self.buffer.close()
        self.buffer = buffer

    def _lost_message(self) -> str:
        self.process.join(timeout=1)
        code = self.process.exitcode
        how = "is still running" if code is None else f"ended with exit code {code}"
        return (f"stemkit's worker process {self.process.pid} {how} and did not answer for a block of patterns; "
                "the next call starts a new one (set STEMKIT_PROCESS_WORKERS=0 to use threads instead)")


def _serve(connection: socket.socket, parent_side: socket.socket) -> None:
    """A worker's loop: map the shared memory, keep kernels, run blocks, answer; end at the end of file."""
    global _IN_WORKER
    _IN_WORKER = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent_side.close()  # the parent's sides (this one's, and other workers'), held here, would hide the end of file
    for other in list(_OPEN):
        other.socket.close()
    import torch

    torch.set_num_threads(1)
    from stemkit.preprocess import kernels as kernels_module

    kernels_module._forget_pool_in_child()
    buffer: mmap.mmap | None = None
    kept: OrderedDict[int, Callable] = OrderedDict()
    while True:
        try:
            message, fds = _receive(connection)
        except (EOFError, OSError):
            return
        if message[0] == "buffer":
            buffer = mmap.mmap(fds[0], message[1])
            os.close(fds[0])
            continue
        _, token, pickled, shape, dtype, out_shape, out_dtype, offset = message
        try:
            if pickled is not None:
                kept[token] = pickle.loads(pickled)
                while len(kept) > KERNELS_KEPT:
                    kept.popitem(last=False)
            kept.move_to_end(token)
            block = np.ndarray(shape, np.dtype(dtype), buffer=buffer)
            result = np.ndarray(out_shape, np.dtype(out_dtype), buffer=buffer, offset=offset)
            result[...] = kept[token](block)
            del block, result
            reply: tuple = ("done",)
        except Exception as error:
            reply = ("error", _picklable(error), traceback.format_exc())
        try:
            _send(connection, reply)
        except OSError:
            return


def _picklable(error: BaseException) -> BaseException | None:
    """``error`` if it survives pickling, else None (the traceback text still tells what happened)."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return None


def _rebuilt(error: BaseException | None, text: str) -> BaseException:
    """The worker's exception with its traceback attached, or a :class:`WorkerError` holding the text."""
    cause = WorkerError(f"in a stemkit worker process:\n{text}")
    if error is None:
        return cause
    error.__cause__ = cause
    return error


def _send(connection: socket.socket, message: tuple, fds: list[int] | tuple = ()) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    header = _HEADER.pack(len(payload))
    if fds:
        socket.send_fds(connection, [header], list(fds))
        connection.sendall(payload)
    else:
        connection.sendall(header + payload)


def _receive(connection: socket.socket) -> tuple[tuple, list[int]]:
    header, fds, _, _ = socket.recv_fds(connection, _HEADER.size, 4)
    if not header:
        raise EOFError("the other end closed the connection")
    header += _read_exactly(connection, _HEADER.size - len(header))
    (size,) = _HEADER.unpack(header)
    return pickle.loads(_read_exactly(connection, size)), list(fds)


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    data = bytearray(size)
    view, got = memoryview(data), 0
    while got < size:
        n = connection.recv_into(view[got:])
        if n == 0:
            raise EOFError("the other end closed the connection")
        got += n
    return bytes(data)
