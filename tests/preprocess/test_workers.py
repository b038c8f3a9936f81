"""Worker processes for map_patterns: forked once, fed blocks through shared memory; same results as threads."""

import os
import time

import numpy as np
import pytest
import torch

import stemkit
from stemkit.preprocess import workers
from stemkit.preprocess.kernels import map_patterns

pytestmark = pytest.mark.skipif(not workers.available(), reason="worker processes need fork and memfd_create")


class Scaled:
    """A picklable kernel: each pattern's sum times 1 and 2, and the id and torch thread count of the process.

    It takes a few ms per block, so that this thread does not finish every block before a worker takes one.
    """

    def __call__(self, block: np.ndarray) -> np.ndarray:
        time.sleep(0.005)
        sums = block.sum(axis=(-2, -1))[..., None] * np.arange(1, 3)
        pid = np.full(block.shape[:2] + (1,), os.getpid(), dtype=np.float64)
        threads = np.full(block.shape[:2] + (1,), torch.get_num_threads(), dtype=np.float64)
        return np.concatenate([sums, pid, threads], axis=-1)


class Failing:
    def __call__(self, block: np.ndarray) -> np.ndarray:
        if os.getpid() != self.parent:
            raise ValueError("broken kernel in a worker")
        time.sleep(0.005)  # leave blocks for the worker
        return np.zeros(block.shape[:2] + (1,))

    def __init__(self):
        self.parent = os.getpid()


class Exiting:
    def __call__(self, block: np.ndarray) -> np.ndarray:
        if os.getpid() != self.parent:
            os._exit(3)
        time.sleep(0.005)
        return np.zeros(block.shape[:2] + (1,))

    def __init__(self):
        self.parent = os.getpid()


def data(shape=(9, 7, 4, 4), dtype=np.float64):
    values = np.random.default_rng(0).random(shape).astype(dtype)
    return stemkit.datacube(values, k_step=0.01, beam_energy_kev=300)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.uint16])
def test_processes_give_the_kernel_s_result(dtype):
    cube = data(dtype=dtype)
    expected = Scaled()(cube.values)[..., :2]
    for count in (2, 3):
        out = map_patterns(cube, Scaled(), out_shape=(4,), dtype=np.float64, workers=count, block_patterns=5, processes=True)
        np.testing.assert_array_equal(out[..., :2], expected)
        pids = set(np.unique(out[..., 2]).astype(int))
        assert os.getpid() in pids and len(pids) > 1, "the blocks ran here and in worker processes"
        assert np.all(out[..., 3][out[..., 2] != os.getpid()] == 1), "workers run torch single-threaded"


def test_workers_are_kept_between_calls_and_grow_their_shared_memory():
    first = map_patterns(data(), Scaled(), out_shape=(4,), dtype=np.float64, workers=2, block_patterns=5, processes=True)
    big = data((6, 5, 32, 32))
    second = map_patterns(big, Scaled(), out_shape=(4,), dtype=np.float64, workers=2, block_patterns=10, processes=True)
    np.testing.assert_array_equal(second[..., :2], Scaled()(big.values)[..., :2])
    workers_first = set(np.unique(first[..., 2])) - {os.getpid()}
    workers_second = set(np.unique(second[..., 2])) - {os.getpid()}
    assert workers_first & workers_second, "the same worker process served both calls"


def test_an_unpicklable_kernel_runs_in_threads():
    cube = data()
    kernel = lambda block: np.full(block.shape[:2] + (1,), os.getpid(), dtype=np.float64)  # noqa: E731
    out = map_patterns(cube, kernel, out_shape=(1,), dtype=np.float64, workers=2, block_patterns=5, processes=True)
    assert np.all(out == os.getpid())


def test_a_kernel_error_in_a_worker_is_raised_here_with_its_traceback():
    with pytest.raises(ValueError, match="broken kernel in a worker") as caught:
        map_patterns(data(), Failing(), out_shape=(1,), dtype=np.float64, workers=2, block_patterns=2, processes=True)
    assert "in a stemkit worker process" in str(caught.value.__cause__)
    out = map_patterns(data(), Scaled(), out_shape=(4,), dtype=np.float64, workers=2, block_patterns=5, processes=True)
    np.testing.assert_array_equal(out[..., :2], Scaled()(data().values)[..., :2])


def test_a_lost_worker_is_reported_and_replaced():
    with pytest.raises(workers.WorkerError, match="ended with exit code 3.*STEMKIT_PROCESS_WORKERS=0"):
        map_patterns(data(), Exiting(), out_shape=(1,), dtype=np.float64, workers=2, block_patterns=2, processes=True)
    out = map_patterns(data(), Scaled(), out_shape=(4,), dtype=np.float64, workers=2, block_patterns=5, processes=True)
    np.testing.assert_array_equal(out[..., :2], Scaled()(data().values)[..., :2])
    assert len(set(np.unique(out[..., 2]))) > 1


def test_disabled_processes_run_threads(monkeypatch):
    monkeypatch.setattr(workers, "ENABLED", False)
    out = map_patterns(data(), Scaled(), out_shape=(4,), dtype=np.float64, workers=2, block_patterns=5, processes=True)
    assert np.all(out[..., 2] == os.getpid())


def test_shutdown_ends_the_idle_workers():
    out = map_patterns(data(), Scaled(), out_shape=(4,), dtype=np.float64, workers=2, block_patterns=5, processes=True)
    pids = set(np.unique(out[..., 2]).astype(int)) - {os.getpid()}
    processes = [w.process for w in workers._IDLE]
    workers.shutdown()
    assert not workers._IDLE
    assert {p.pid for p in processes} >= pids and not any(p.is_alive() for p in processes)


def test_dask_chunks_run_in_blocks_over_the_workers():
    cube = data((8, 6, 4, 4)).chunk({"scan_y": 4, "scan_x": 6})
    lazy = map_patterns(cube, Scaled(), out_shape=(4,), dtype=np.float64, workers=2, block_patterns=6, processes=True)
    out = lazy.compute(scheduler="synchronous")
    np.testing.assert_array_equal(out[..., :2], Scaled()(cube.values)[..., :2])
    assert len(set(np.unique(out[..., 2]))) > 1, "blocks of the chunks ran in a worker process"


def test_no_more_workers_than_cores_but_one(monkeypatch):
    monkeypatch.setattr(workers, "MAX_WORKERS", 1)
    with workers.borrowed(1) as first, workers.borrowed(1) as second:
        assert len(first) == 1 and second == [], "a second caller at the same time runs alone"
