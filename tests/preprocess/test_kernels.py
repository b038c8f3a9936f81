"""map_patterns: blocks of whole patterns, run in a pool of threads kept between calls."""

import numpy as np
import pytest

import stemkit
from stemkit.preprocess.kernels import _pattern_blocks, map_patterns, run_in_threads


@pytest.mark.parametrize("shape, size", [((7, 5), 12), ((3, 40), 16), ((2, 9), 100), ((4, 4), 1)])
def test_blocks_cover_every_pattern_once(shape, size):
    covered = np.zeros(shape, int)
    for rows, cols in _pattern_blocks(*shape, size):
        covered[rows, cols] += 1
        assert covered[rows, cols].size <= max(size, shape[1])
    assert np.all(covered == 1)


def test_threads_and_blocks_give_the_kernel_s_result():
    data = stemkit.datacube(np.random.default_rng(0).random((9, 7, 4, 4)), k_step=0.01, beam_energy_kev=300)
    kernel = lambda block: block.sum(axis=(-2, -1))[..., None] * np.arange(1, 3)  # noqa: E731
    expected = kernel(data.values)
    for workers in (1, 2, 3):
        out = map_patterns(data, kernel, out_shape=(2,), dtype=np.float64, workers=workers, block_patterns=5)
        np.testing.assert_array_equal(out, expected)


def test_a_failing_kernel_raises():
    data = stemkit.datacube(np.ones((6, 2, 4, 4)), k_step=0.01, beam_energy_kev=300)

    def kernel(block):
        raise RuntimeError("broken kernel")

    with pytest.raises(RuntimeError, match="broken kernel"):
        map_patterns(data, kernel, out_shape=(1,), dtype=np.float64, workers=2, block_patterns=2)


def test_a_kernel_may_map_patterns_itself():
    """A kernel running in a pool thread maps its own blocks there, one after the other (no deadlock)."""
    data = stemkit.datacube(np.ones((4, 3, 2, 2)), k_step=0.01, beam_energy_kev=300)

    def inner(block):
        return block.sum(axis=(-2, -1))[..., None]

    def outer(block):
        sub = stemkit.datacube(block, k_step=0.01, beam_energy_kev=300)
        return map_patterns(sub, inner, out_shape=(1,), dtype=np.float64, workers=2, block_patterns=1)

    out = map_patterns(data, outer, out_shape=(1,), dtype=np.float64, workers=2, block_patterns=3)
    np.testing.assert_array_equal(out, np.full((4, 3, 1), 4.0))


def test_run_in_threads_keeps_the_order_runs_torch_single_threaded_and_restores_the_count():
    import threading

    import torch

    threads = torch.get_num_threads()
    seen = []

    def work(part):
        seen.append((torch.get_num_threads(), threading.get_ident()))
        return part * part

    try:
        torch.set_num_threads(2)
        assert run_in_threads(work, list(range(40))) == [i * i for i in range(40)]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert {count for count, _ in seen} == {1}
