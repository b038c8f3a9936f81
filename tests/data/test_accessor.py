"""The .stem accessor against naive numpy references, on numpy and on dask with odd chunks."""

import dask.array as da
import numpy as np
import pytest

from tests.conftest import make_cube

REFERENCE = make_cube()


def naive_annulus(cube, inner, outer, center=(0.0, 0.0)):
    ky = cube.ky.values[:, None]
    kx = cube.kx.values[None, :]
    r = np.sqrt((ky - center[0]) ** 2 + (kx - center[1]) ** 2)
    mask = (r >= inner) & (r < outer)
    values = cube.values.astype(float)
    out = np.zeros(cube.shape[:2])
    for i in range(cube.shape[0]):
        for j in range(cube.shape[1]):
            out[i, j] = values[i, j][mask].sum()
    return out


def test_calibration_properties(cube):
    assert cube.stem.scan_step_nm == pytest.approx((0.5, 0.75))
    assert cube.stem.k_step == pytest.approx((0.025, 0.025))
    assert cube.stem.beam_energy_kev == 300.0
    assert cube.stem.k_origin == pytest.approx((12, 13))


def test_mean_and_max_pattern(dask_cube):
    mean = dask_cube.stem.mean_pattern()
    assert isinstance(mean.data, da.Array), "must stay lazy"
    np.testing.assert_allclose(mean.values, REFERENCE.values.mean(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_array_equal(dask_cube.stem.max_pattern().values, REFERENCE.values.max(axis=(0, 1)))
    assert mean.dims == ("ky", "kx")


@pytest.mark.parametrize("inner, outer, center", [(0.0, 0.1, (0, 0)), (0.1, 0.25, (0, 0)), (0.0, 0.07, (0.05, -0.1))])
def test_virtual_image_matches_naive_numpy(dask_cube, inner, outer, center):
    image = dask_cube.stem.virtual_image(inner=inner, outer=outer, center=center)
    assert isinstance(image.data, da.Array), "must stay lazy"
    assert image.dims == ("scan_y", "scan_x")
    np.testing.assert_allclose(image.values, naive_annulus(REFERENCE, inner, outer, center), rtol=1e-5)
    np.testing.assert_array_equal(image.scan_x.values, REFERENCE.scan_x.values)


def test_virtual_image_numpy_equals_dask(cube, dask_cube):
    np.testing.assert_allclose(
        cube.stem.virtual_image(outer=0.2).values, dask_cube.stem.virtual_image(outer=0.2).values, rtol=1e-6
    )


def test_virtual_image_errors(cube):
    with pytest.raises(ValueError, match="inner < outer"):
        cube.stem.virtual_image(inner=0.3, outer=0.1)
    with pytest.raises(ValueError, match="covers no pixel"):
        cube.stem.virtual_image(inner=5.0, outer=6.0)


def test_crop(dask_cube):
    cropped = dask_cube.stem.crop(scan_y=slice(1, 4), scan_x=slice(2, 7), k_max=0.1)
    expected = REFERENCE.values[1:4, 2:7][:, :, 8:17, 9:18]
    np.testing.assert_array_equal(cropped.values, expected)
    assert np.all(np.abs(cropped.kx.values) <= 0.1 + 1e-12)
    assert isinstance(cropped.data, da.Array)
    assert dask_cube.stem.crop(k_max=1e-4).shape[2:] == (1, 1), "only the direct-beam pixel"
    with pytest.raises(ValueError, match="positive radius"):
        dask_cube.stem.crop(k_max=0)
    with pytest.raises(ValueError, match="empty"):
        dask_cube.stem.crop(scan_y=slice(10, 12))


@pytest.mark.parametrize("scan, k", [(1, 2), (2, 1), (2, 3)])
def test_bin_sums_blocks(dask_cube, scan, k):
    binned = dask_cube.stem.bin(scan=scan, k=k)
    assert isinstance(binned.data, da.Array)
    v = REFERENCE.values.astype(float)
    ny, nx, nky, nkx = (s // f for s, f in zip(v.shape, (scan, scan, k, k)))
    trimmed = v[: ny * scan, : nx * scan, : nky * k, : nkx * k]
    expected = trimmed.reshape(ny, scan, nx, scan, nky, k, nkx, k).sum(axis=(1, 3, 5, 7))
    np.testing.assert_allclose(binned.values, expected)
    # coordinates are the bin means, so the physical k of the beam is kept
    np.testing.assert_allclose(binned.kx.values, REFERENCE.kx.values[: nkx * k].reshape(nkx, k).mean(1))
    assert binned.kx.attrs["units"] == "1/Å"
    assert binned.attrs["beam_energy_kev"] == 300.0


def test_bin_mean_and_errors(cube):
    assert np.isclose(float(cube.stem.bin(k=2, reduce="mean").mean()), float(cube[:, :, :24, :26].mean()), rtol=1e-5)
    with pytest.raises(ValueError, match="positive integer"):
        cube.stem.bin(k=1.5)
    with pytest.raises(ValueError, match="larger than the axis"):
        cube.stem.bin(scan=8)
