"""Stages run on a dask.distributed cluster of processes and give the in-memory results."""

import numpy as np
import pytest
import xarray as xr
from distributed import Client, LocalCluster

import stemkit
from stemkit.physics.specimens import polycrystal
from stemkit.preprocess import beam_position, center_of_mass, find_peaks, virtual_image


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            yield client


@pytest.fixture(scope="module")
def specimen():
    return polycrystal(scan_shape=(8, 10), n_grains=3, seed=1, dose=1e5, pattern_size=64, k_step=0.05)


def test_stages_on_a_process_cluster_equal_in_memory(client, specimen, tmp_path):
    eager = specimen.intensity
    store = stemkit.save(eager, tmp_path / "cube.zarr")
    lazy = stemkit.load(store, lazy=True).chunk({"scan_y": 3, "scan_x": 4})
    np.testing.assert_array_equal(virtual_image(lazy, "adf", beam_radius=0.1).values, virtual_image(eager, "adf", beam_radius=0.1).values)
    xr.testing.assert_allclose(beam_position(lazy, radius=0.1), beam_position(eager, radius=0.1))
    xr.testing.assert_allclose(find_peaks(lazy, radius=0.1), find_peaks(eager, radius=0.1))
    xr.testing.assert_allclose(center_of_mass(lazy), center_of_mass(eager))
    assert len(client.scheduler_info()["workers"]) == 2
