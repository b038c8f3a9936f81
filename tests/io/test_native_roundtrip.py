"""stemkit.save / stemkit.load round-trip DataArrays and result Datasets exactly, and never lose a file."""

import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import stemkit
from stemkit.io import lazy as lazy_rules
from tests.conftest import make_cube

SUFFIXES = [".zarr", ".nc"]


def peaks_dataset() -> xr.Dataset:
    rng = np.random.default_rng(3)
    shape = (3, 4, 5)
    return xr.Dataset(
        {
            "kx": (("scan_y", "scan_x", "peak"), rng.normal(size=shape).astype("float32"), {"units": "1/Å"}),
            "ky": (("scan_y", "scan_x", "peak"), rng.normal(size=shape).astype("float32"), {"units": "1/Å"}),
            "intensity": (("scan_y", "scan_x", "peak"), rng.random(shape)),
            "valid": (("scan_y", "scan_x", "peak"), rng.random(shape) > 0.5),
            "phase": (("scan_y", "scan_x"), np.array([["Cu", "Cu2O", "Cu", "Cu"]] * 3)),
            "quaternion": (("scan_y", "scan_x", "quat"), rng.normal(size=(3, 4, 4))),
        },
        coords={"scan_y": ("scan_y", [0.0, 0.5, 1.0], {"units": "nm"}), "scan_x": np.arange(4.0), "quat": list("wxyz")},
        attrs={"method": "test", "parameters": {"threshold": 0.1, "subpixel": True, "probe": None}, "shape": (3, 4)},
    )


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int32", "float32", "float64"])
def test_dataarray_roundtrip_is_identical(tmp_path, suffix, dtype):
    cube = make_cube(dtype=dtype)
    cube.attrs.update(convergence_mrad=1.5, source="sim", flags=[True, False], none=None, nested={"a": [1, 2]})
    path = stemkit.save(cube, tmp_path / f"cube{suffix}")
    back = stemkit.load(path)
    xr.testing.assert_identical(back, cube)
    assert back.dtype == cube.dtype
    assert back.attrs == cube.attrs
    for dim in cube.dims:
        assert back[dim].dtype == cube[dim].dtype and back[dim].attrs == cube[dim].attrs


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_dataset_roundtrip_is_identical(tmp_path, suffix):
    ds = peaks_dataset()
    back = stemkit.load(stemkit.save(ds, tmp_path / f"peaks{suffix}"))
    xr.testing.assert_identical(back, ds)
    for name in ds.variables:
        assert back[name].dtype == ds[name].dtype, name
    assert back.attrs["parameters"] == {"threshold": 0.1, "subpixel": True, "probe": None}
    assert back.attrs["shape"] == (3, 4)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_dask_cube_saves_chunkwise_and_loads_lazily(tmp_path, suffix):
    cube = make_cube()
    lazy_cube = cube.copy(data=da.from_array(cube.values, chunks=(2, 7, -1, -1)))
    path = stemkit.save(lazy_cube, tmp_path / f"lazy{suffix}")
    back = stemkit.load(path, lazy=True)
    assert isinstance(back.data, da.Array)
    assert back.chunks[2] == (cube.sizes["ky"],)
    xr.testing.assert_identical(back.compute(), cube)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_lazy_dataset_with_text_is_written_chunk_by_chunk(tmp_path, suffix):
    # a dask-backed result (e.g. orientation maps from xr.map_blocks) is computed once, while it is written,
    # not first loaded whole to find out what its text variable holds
    ds = peaks_dataset()
    computed = []

    def phase_block(block):
        computed.append(block.shape)
        return block

    lazy = ds.chunk({"scan_y": 2})
    phase = da.map_blocks(phase_block, lazy["phase"].data, dtype=ds["phase"].dtype, meta=np.array((), ds["phase"].dtype))
    lazy["phase"] = lazy["phase"].copy(data=phase)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # xarray warns (SerializationWarning) when it loads a dask variable to save it
        path = stemkit.save(lazy, tmp_path / f"lazy{suffix}")
    assert sorted(computed) == [(1, 4), (2, 4)]
    back = stemkit.load(path)
    xr.testing.assert_identical(back, ds)
    assert back["phase"].dtype == ds["phase"].dtype


def test_lazy_is_chosen_by_size(tmp_path, monkeypatch):
    path = stemkit.save(make_cube(), tmp_path / "c.zarr")
    assert not isinstance(stemkit.load(path).data, da.Array)
    monkeypatch.setattr(lazy_rules, "LAZY_THRESHOLD_BYTES", 1000)
    assert isinstance(stemkit.load(path).data, da.Array)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_existing_file_is_never_overwritten_silently(tmp_path, suffix):
    first, second = make_cube(seed=1), make_cube(seed=2)
    path = stemkit.save(first, tmp_path / f"c{suffix}")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        stemkit.save(second, path)
    xr.testing.assert_identical(stemkit.load(path), first)
    stemkit.save(second, path, overwrite=True)
    xr.testing.assert_identical(stemkit.load(path), second)
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temporary files left behind"


def test_failed_save_keeps_the_old_file(tmp_path):
    path = stemkit.save(make_cube(), tmp_path / "c.nc")
    bad = make_cube()
    bad.attrs["unsaveable"] = object()
    with pytest.raises(TypeError, match="cannot save attribute"):
        stemkit.save(bad, path, overwrite=True)
    xr.testing.assert_identical(stemkit.load(path), make_cube())


def test_overwriting_the_lazily_loaded_source_is_safe(tmp_path):
    path = stemkit.save(make_cube(), tmp_path / "c.zarr")
    lazy_cube = stemkit.load(path, lazy=True)
    stemkit.save(lazy_cube * 2, path, overwrite=True)
    np.testing.assert_array_equal(stemkit.load(path).values, make_cube().values * 2)


def test_unknown_suffix_on_save(tmp_path):
    with pytest.raises(ValueError, match=r"\.zarr.*\.nc"):
        stemkit.save(make_cube(), tmp_path / "c.h5")


def test_calibration_arguments_are_refused_for_saved_files(tmp_path):
    path = stemkit.save(make_cube(), tmp_path / "c.zarr")
    with pytest.raises(ValueError, match="assign_coords"):
        stemkit.load(path, beam_energy_kev=200)


def test_corrupt_native_file_gives_a_clear_error(tmp_path):
    path = tmp_path / "broken.nc"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(stemkit.FileFormatError, match="broken.nc"):
        stemkit.load(path)
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    with pytest.raises(stemkit.FileFormatError, match="empty.zarr"):
        stemkit.load(empty)


@pytest.mark.parametrize("dask_chunks", [None, (2, 12, 16, 16)])
def test_zarr_cubes_are_sharded_so_one_pattern_reads_alone(tmp_path, dask_chunks):
    import zarr

    from stemkit.viz.patterns import PatternReader

    cube = make_cube((6, 12, 16, 16))
    if dask_chunks is not None:
        cube = cube.chunk(dict(zip(cube.dims, dask_chunks)))
    path = stemkit.save(cube, tmp_path / "cube.zarr")
    group = zarr.open_group(path, mode="r")
    (stored,) = [group[key] for key in group.array_keys() if group[key].ndim == 4]
    shard = dask_chunks or lazy_rules.pattern_chunks(cube.shape, cube.dtype.itemsize)
    assert stored.shards == tuple(shard)
    assert stored.chunks == lazy_rules.inner_chunks(tuple(shard))
    assert stored.chunks[0] == 1 and stored.chunks[1] <= lazy_rules.INNER_PATTERNS
    loaded = stemkit.load(path, lazy=True)
    assert tuple(c[0] for c in loaded.data.chunks) == tuple(shard)  # computations read whole shards
    np.testing.assert_array_equal(loaded.values, cube.values)
    reader = PatternReader(loaded)
    assert reader.reads_single_patterns
    np.testing.assert_array_equal(reader.pattern(4, 7), cube.values[4, 7])
