"""Stages run on a dask.distributed cluster of processes and give the in-memory results."""

import dask
import numpy as np
import pytest
import xarray as xr
from distributed import Client, LocalCluster

import stemkit
from stemkit.orientation import OrientationMapper
from stemkit.physics.specimens import polycrystal
from stemkit.preprocess import beam_position, center_of_mass, find_peaks, virtual_image


@pytest.fixture(scope="module")
def client():
    # without the active memory manager a worker keeps what it fetched until no task needs it, so
    # its log (long enough to keep every entry) counts each transfer of the model (with the manager,
    # a copy no task waits for may be dropped and fetched again later)
    with dask.config.set({"distributed.scheduler.active-memory-manager.start": False,
                          "distributed.admin.low-level-log-length": 1_000_000}):
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


def test_orientation_blocks_on_the_cluster_receive_the_model_once(client, specimen, monkeypatch):
    monkeypatch.setattr("stemkit.orientation.mapper.LAZY_BLOCK_PATTERNS", 10)  # small input chunks stay blocks
    mapper = OrientationMapper.pretrained("cu-cu2o")
    eager = mapper.predict(specimen.intensity, progress=False)
    lazy = mapper.predict(specimen.intensity.chunk({"scan_y": 1}), lazy=True)  # 8 blocks of one row
    computed = lazy.compute()
    # float32 batch noise (the model runs on other batches there); IPF colours magnify an orientation's last
    # bits about tenfold near the triangle's corners, so they are compared to a thousandth of the colour range
    xr.testing.assert_allclose(computed.drop_vars("ipf_rgb"), eager.drop_vars("ipf_rgb"), rtol=1e-4, atol=1e-5)
    xr.testing.assert_allclose(computed["ipf_rgb"], eager["ipf_rgb"], rtol=0, atol=1e-3)
    xr.testing.assert_identical(computed["phase"], eager["phase"])
    # the model arrives at a worker by being computed there or fetched from another: both put it in memory
    arrivals = client.run(lambda dask_worker: sum(1 for entry in dask_worker.state.log
                                                  if "OrientationMapper" in str(entry[0]) and entry[1] == "put-in-memory"))
    blocks_run = client.run(lambda dask_worker: sum(1 for entry in dask_worker.state.log
                                                    if str(entry[0]).startswith("orientation-")
                                                    and entry[1:3] == ("executing", "memory")))
    assert sum(blocks_run.values()) == 8
    assert all(n <= 1 for n in arrivals.values()), arrivals  # once per worker, not once per block
    assert sum(arrivals.values()) >= 1


def test_strain_and_clustering_on_the_cluster_equal_in_memory(client, tmp_path):
    from stemkit.clustering import DivisiveClustering
    from stemkit.physics.specimens import strained_film
    from stemkit.strain import CCSTAE, LatticeFit

    film = strained_film("WS2", (6, 8), pattern_size=64, k_step=0.05, dose=1e6, seed=2)
    eager = film.intensity
    lazy = stemkit.load(stemkit.save(eager, tmp_path / "film.zarr"), lazy=True).chunk({"scan_y": 2})
    for estimator in (LatticeFit(), CCSTAE(epochs=1, max_train_patterns=48, progress=False, seed=0, num_threads=1)):
        with dask.config.set(scheduler="sync"):  # fitted in this process; only transform is compared
            estimator.fit(eager)
        in_memory, on_cluster = estimator.transform(eager), estimator.transform(lazy)
        xr.testing.assert_allclose(on_cluster.drop_attrs(), in_memory.drop_attrs(), rtol=1e-4, atol=1e-5)
    arrivals = client.run(lambda dask_worker: sum(1 for entry in dask_worker.state.log
                                                  if str(entry[0]).startswith("CCSTAE-") and entry[1] == "put-in-memory"))
    assert all(n <= 1 for n in arrivals.values()) and sum(arrivals.values()) >= 1, arrivals
    options = dict(k_max=3, max_depth=2, seed=0, progress=False)
    np.testing.assert_array_equal(DivisiveClustering(**options).fit(lazy).labels_.values,
                                  DivisiveClustering(**options).fit(eager).labels_.values)


def test_centring_and_the_explore_dashboard_on_the_cluster_equal_in_memory(client, specimen, tmp_path):
    from stemkit.preprocess import center
    from stemkit.viz import explore

    eager = specimen.intensity
    lazy = stemkit.load(stemkit.save(eager, tmp_path / "cube.zarr"), lazy=True).chunk({"scan_y": 3})
    xr.testing.assert_allclose(center(lazy).compute(), center(eager))
    on_cluster, in_memory = explore(lazy, detector="ADF"), explore(eager, detector="ADF")
    on_cluster.recompute()
    xr.testing.assert_allclose(on_cluster.image, in_memory.image)
    np.testing.assert_array_equal(on_cluster.select(5, 7), in_memory.select(5, 7))
