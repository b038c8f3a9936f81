"""map_row_blocks: lazy results block of scan rows by block, with shared objects in the graph once."""

import pickle

import dask
import numpy as np
import pytest
import xarray as xr

from stemkit.data.blocks import in_row_blocks, map_row_blocks, shared


class Scale:
    """A stand-in for a fitted model: a large table every block needs."""

    def __init__(self, factor: float):
        self.factor = factor
        self.table = np.arange(200_000, dtype=np.float64)  # 1.6 MB when pickled

    def __call__(self, block: xr.DataArray) -> xr.Dataset:
        total = block.sum(("ky", "kx")) * self.factor
        return xr.Dataset({"total": total, "pair": (("scan_y", "scan_x", "two"), np.stack([total, -total], -1))},
                          coords={"two": ["plus", "minus"]}, attrs={"factor": self.factor})


def scale_block(block: xr.DataArray, model: Scale) -> xr.Dataset:
    return model(block)


@pytest.fixture
def cube():
    values = np.random.default_rng(0).random((7, 5, 4, 3), dtype=np.float32)
    coords = {"scan_y": np.arange(7) * 2.0, "scan_x": np.arange(5) * 2.0, "ky": np.arange(4.0), "kx": np.arange(3.0)}
    return xr.DataArray(values, dims=("scan_y", "scan_x", "ky", "kx"), coords=coords, name="intensity")


@pytest.mark.parametrize("chunks", [{"scan_y": 3}, {"scan_y": 1}, {"scan_y": 2, "scan_x": 2}, {"scan_y": 7}])
def test_blocks_give_the_in_memory_answer_on_odd_chunks(cube, chunks):
    model = Scale(2.5)
    blocks = in_row_blocks(cube.chunk(chunks), 10)
    lazy = map_row_blocks(scale_block, blocks, shared(model))
    assert lazy["total"].chunks[0] == blocks.chunks[0]
    xr.testing.assert_identical(lazy.compute(), model(cube))


def test_blocks_are_whole_rows_and_small_chunks_are_merged(cube):
    assert in_row_blocks(cube, 10).chunks[:2] == ((2, 2, 2, 1), (5,))  # 10 patterns: two rows of five
    assert in_row_blocks(cube.chunk({"scan_y": 1, "scan_x": 2}), 10).chunks[:2] == ((2, 2, 2, 1), (5,))
    assert in_row_blocks(cube.chunk({"scan_y": 3}), 10).chunks[:2] == ((3, 3, 1), (5,))  # large enough: kept


def test_a_shared_object_is_one_key_of_the_graph_whatever_the_blocks(cube):
    model = Scale(1.0)
    lazy = map_row_blocks(scale_block, in_row_blocks(cube.chunk({"scan_y": 1}), 1), shared(model))
    graph = dict(lazy.__dask_graph__())
    holding = [key for key, task in graph.items() if len(pickle.dumps(task)) > model.table.nbytes]
    assert len(holding) == 1, holding
    assert sum(1 for key in graph if str(key).startswith("block-")) == 7
    with dask.config.set(scheduler="threads"):
        xr.testing.assert_identical(lazy.compute(), model(cube))


def test_what_cannot_be_mapped_is_refused(cube):
    with pytest.raises(ValueError, match="dask-backed"):
        map_row_blocks(scale_block, cube, shared(Scale(1.0)))
    with pytest.raises(ValueError, match="along 'scan_y' first"):
        map_row_blocks(lambda block: xr.Dataset({"mean": block.mean("scan_y")}), cube.chunk({"scan_y": 2}))


def vertical_neighbours_block(block: xr.DataArray) -> xr.Dataset:
    """Each pattern's total plus those of the patterns one and two rows above and below (what a halo is for)."""
    total = block.sum(("ky", "kx"))
    padded = total.pad(scan_y=2, constant_values=0.0)
    around = sum(padded.shift(scan_y=shift).isel(scan_y=slice(2, -2)) for shift in (-2, -1, 0, 1, 2))
    return xr.Dataset({"around": around})


@pytest.mark.parametrize("chunks", [{"scan_y": 1}, {"scan_y": 3}, {"scan_y": 2, "scan_x": 2}])
def test_a_halo_gives_each_block_the_rows_around_it(cube, chunks):
    blocks = in_row_blocks(cube.chunk(chunks), 1)
    lazy = map_row_blocks(vertical_neighbours_block, blocks, halo=2)
    assert lazy["around"].chunks[0] == blocks.chunks[0]
    xr.testing.assert_allclose(lazy.compute(), vertical_neighbours_block(cube))
    without = map_row_blocks(vertical_neighbours_block, blocks).compute()
    assert not np.allclose(without["around"], vertical_neighbours_block(cube)["around"])  # the halo was needed
    with pytest.raises(ValueError, match="halo must be 0 or more"):
        map_row_blocks(vertical_neighbours_block, blocks, halo=-1)
