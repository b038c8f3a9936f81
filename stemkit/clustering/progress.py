"""A tqdm.auto progress bar over the tasks of a dask computation, which can be silenced."""

from __future__ import annotations

from typing import Any

import dask
from dask.callbacks import Callback
from tqdm.auto import tqdm


class _TqdmCallback(Callback):
    """Advance a tqdm bar by one for every finished dask task."""

    def __init__(self, description: str, enabled: bool) -> None:
        super().__init__()
        self.description = description
        self.enabled = enabled
        self.bar: Any = None

    def _start_state(self, dsk, state) -> None:
        total = sum(len(state[key]) for key in ("ready", "waiting", "running", "finished"))
        self.bar = tqdm(total=total, desc=self.description, unit="task", disable=not self.enabled, leave=False)

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        self.bar.update(1)

    def _finish(self, dsk, state, errored) -> None:
        self.bar.close()


def compute(*collections: Any, description: str, progress: bool) -> tuple:
    """``dask.compute`` the collections together (one pass over shared inputs) with a progress bar."""
    with _TqdmCallback(description, progress):
        return dask.compute(*collections)
