"""Shared fixtures: small canonical datacubes, numpy- and dask-backed."""

from __future__ import annotations

import os
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import stemkit

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


@pytest.fixture(autouse=True, scope="module")
def _restore_environment():
    """Leave the process environment as each test module found it (module scope: set up before, and torn
    down after, the module's own fixtures, such as a dask cluster).

    Libraries change it behind the tests' back: distributed's nanny sets OMP_NUM_THREADS=1 (and MKL_,
    OPENBLAS_ and MALLOC_TRIM_THRESHOLD_) in this process before it spawns workers, and every later
    subprocess (a notebook's kernel, the JupyterLab test's server and kernel) then ran torch on one thread.
    """
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


def make_cube(shape=(5, 7, 24, 26), *, dtype="float32", seed=0, k_step=0.025) -> xr.DataArray:
    """A cube whose every pattern differs (a Gaussian disk that moves with the scan, plus Poisson noise)."""
    rng = np.random.default_rng(seed)
    n_y, n_x, n_ky, n_kx = shape
    yy, xx = np.mgrid[:n_ky, :n_kx]
    iy, ix = np.mgrid[:n_y, :n_x]
    cy = n_ky // 2 + 0.3 * (iy - n_y / 2)
    cx = n_kx // 2 + 0.2 * (ix - n_x / 2)
    disk = 200 * np.exp(-((yy - cy[..., None, None]) ** 2 + (xx - cx[..., None, None]) ** 2) / 8.0)
    values = rng.poisson(disk + 2.0).astype(dtype)
    return stemkit.datacube(values, scan_step_nm=(0.5, 0.75), k_step=k_step, beam_energy_kev=300.0)


@pytest.fixture
def cube() -> xr.DataArray:
    return make_cube()


@pytest.fixture(params=[(1, 1), (2, 3), (4, 7)], ids=lambda c: f"chunks{c[0]}x{c[1]}")
def dask_cube(request) -> xr.DataArray:
    """The same cube backed by dask, with odd chunk shapes over the scan."""
    c = make_cube()
    return c.copy(data=da.from_array(c.values, chunks=(*request.param, -1, -1)))
