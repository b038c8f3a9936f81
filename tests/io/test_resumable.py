"""save_by_chunks: block-by-block zarr writes that survive an interruption and resume."""

import numpy as np
import pytest
import xarray as xr

import stemkit
from stemkit.io.resumable import progress_dir, save_by_chunks, unfinished_blocks
from tests.conftest import make_cube


class Stop(Exception):
    pass


def result_of(cube: xr.DataArray) -> xr.Dataset:
    """A lazy result over the scan, with a string map and a variable that is not along the rows."""
    total = cube.sum(("ky", "kx"))
    return xr.Dataset({
        "total": total,
        "label": xr.where(total > total.mean(), "bright", "dark").astype("U6"),
        "mean_pattern": cube.mean(("scan_y", "scan_x")),
    }, attrs={"method": "test", "nested": {"a": 1}})


@pytest.fixture
def lazy_cube():
    return make_cube((9, 6, 12, 12)).chunk({"scan_y": 2})


def test_an_interrupted_store_is_readable_and_resumes_to_the_in_memory_result(tmp_path, lazy_cube):
    path = tmp_path / "result.zarr"
    expected = result_of(lazy_cube).compute()

    def stop_after_two(done, total):
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        save_by_chunks(result_of(lazy_cube), path, on_block=stop_after_two)
    assert unfinished_blocks(path) == [(4, 6), (6, 8), (8, 9)]
    partial = xr.open_zarr(path, consolidated=False)
    np.testing.assert_allclose(partial["total"].values[:4], expected["total"].values[:4])
    assert np.isnan(partial["total"].values[4:]).all()
    np.testing.assert_allclose(partial["mean_pattern"].values, expected["mean_pattern"].values)

    written = []
    save_by_chunks(result_of(lazy_cube), path, on_block=lambda done, total: written.append(done))
    assert written == [1, 2, 3, 4, 5] and not progress_dir(path).exists() and unfinished_blocks(path) == []
    loaded = stemkit.load(path)
    xr.testing.assert_identical(loaded, expected)


def test_a_complete_store_is_not_overwritten_without_asking(tmp_path, lazy_cube):
    path = save_by_chunks(result_of(lazy_cube), tmp_path / "result.zarr")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_by_chunks(result_of(lazy_cube), path)
    save_by_chunks(result_of(lazy_cube), path, overwrite=True)
    assert stemkit.load(path)["total"].shape == (9, 6)


def test_resuming_with_another_result_is_refused(tmp_path, lazy_cube):
    path = tmp_path / "result.zarr"

    def stop(done, total):
        raise Stop

    with pytest.raises(Stop):
        save_by_chunks(result_of(lazy_cube), path, on_block=stop)
    with pytest.raises(FileExistsError, match="unfinished"):
        save_by_chunks(result_of(lazy_cube.chunk({"scan_y": 3})), path)
    assert unfinished_blocks(path)  # nothing was touched


@pytest.mark.parametrize("bad", ["result.nc", "result"])
def test_only_zarr_paths(tmp_path, lazy_cube, bad):
    with pytest.raises(ValueError, match=".zarr"):
        save_by_chunks(result_of(lazy_cube), tmp_path / bad)


def test_a_4d_cube_is_written_sharded_by_blocks(tmp_path, lazy_cube):
    path = save_by_chunks(lazy_cube, tmp_path / "cube.zarr")
    loaded = stemkit.load(path, lazy=True)
    xr.testing.assert_identical(loaded.compute(), lazy_cube.compute())
