"""Every virtual detector equals a naive numpy reference, on numpy and on dask with odd chunks."""

import dask.array as da
import numpy as np
import pytest

from stemkit.preprocess import Annulus, Circle, Mask, Rectangle, virtual_image
from tests.conftest import make_cube

REFERENCE = make_cube()
KY = REFERENCE.ky.values[:, None]
KX = REFERENCE.kx.values[None, :]
RNG_MASK = np.random.default_rng(5).random(REFERENCE.shape[2:])


def naive(mask):
    values = REFERENCE.values.astype(float)
    out = np.zeros(REFERENCE.shape[:2])
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = (values[i, j] * mask).sum()
    return out


CASES = {
    "circle": (Circle(0.12), np.hypot(KY, KX) < 0.12),
    "circle_off_axis": (Circle(0.06, center=(0.1, -0.05)), np.hypot(KY - 0.1, KX + 0.05) < 0.06),
    "annulus": (Annulus(0.1, 0.3), (np.hypot(KY, KX) >= 0.1) & (np.hypot(KY, KX) < 0.3)),
    "rectangle": (Rectangle(ky=(-0.1, 0.05), kx=(0.0, 0.2)), (KY >= -0.1) & (KY < 0.05) & (KX >= 0) & (KX < 0.2)),
    "bool_mask": (Mask(RNG_MASK > 0.5), RNG_MASK > 0.5),
    "weighted_mask": (Mask(RNG_MASK), RNG_MASK),
}


@pytest.mark.parametrize("name", CASES)
def test_detector_matches_naive_numpy(dask_cube, name):
    detector, mask = CASES[name]
    image = virtual_image(dask_cube, detector)
    assert isinstance(image.data, da.Array)
    np.testing.assert_allclose(image.values, naive(mask), rtol=1e-5)
    np.testing.assert_allclose(virtual_image(REFERENCE, detector).values, naive(mask), rtol=1e-5)
    assert image.dims == ("scan_y", "scan_x")


def test_named_detectors_follow_the_beam(dask_cube):
    bf = virtual_image(dask_cube, "bf", beam_radius=0.1)
    np.testing.assert_allclose(bf.values, naive(np.hypot(KY, KX) < 0.1), rtol=1e-5)
    adf = virtual_image(dask_cube, "adf", beam_radius=0.1)
    k_edge = min(np.abs(KY).max(), np.abs(KX).max())
    np.testing.assert_allclose(adf.values, naive((np.hypot(KY, KX) >= 0.2) & (np.hypot(KY, KX) < k_edge)), rtol=1e-5)
    assert "bf" in bf.attrs["detector"]
    measured = virtual_image(REFERENCE, "bf")
    assert measured.shape == REFERENCE.shape[:2]


def test_bad_detectors(cube):
    with pytest.raises(ValueError, match="detector's shape"):
        virtual_image(cube, Mask(np.ones((3, 3))))
    with pytest.raises(ValueError, match="covers no detector pixel"):
        virtual_image(cube, Rectangle(ky=(5, 6), kx=(5, 6)))
    with pytest.raises(ValueError, match="unknown detector name"):
        virtual_image(cube, "haadf-ish")
