"""Centre of mass: descan removed, and the scan/detector rotation recovered from a curl-free field."""

import numpy as np
import pytest

import stemkit
from stemkit.physics.render import Detector, render_disks
from stemkit.preprocess import Circle, center_of_mass

DET = Detector(shape=(48, 48), k_step=0.01)
SCAN = (24, 28)


def deflection_patterns(rotation_deg, flipped=False, descan=True):
    """A beam disk deflected by the gradient of two Gaussian 'atoms', seen by a rotated detector."""
    y, x = np.mgrid[: SCAN[0], : SCAN[1]].astype(float)
    phi = np.exp(-((y - 8) ** 2 + (x - 9) ** 2) / 18.0) - 0.7 * np.exp(-((y - 16) ** 2 + (x - 19) ** 2) / 30.0)
    gy, gx = np.gradient(phi)
    gx, gy = 0.04 * gx / np.abs(gx).max(), 0.04 * gy / np.abs(gy).max()  # 1/Å, up to 4 px
    t = np.deg2rad(rotation_deg)
    # scan frame = R(t) · detector frame, so detector = R(-t) · scan frame
    det_x = np.cos(t) * gx + np.sin(t) * gy
    det_y = -np.sin(t) * gx + np.cos(t) * gy
    if flipped:
        det_x, det_y = det_y, det_x
    if descan:
        det_x = det_x + 0.002 * x - 0.05
        det_y = det_y - 0.001 * y + 0.03
    images = render_disks(det_x.reshape(-1, 1), det_y.reshape(-1, 1), np.ones((det_x.size, 1)), detector=DET, radius=0.05)
    data = stemkit.datacube(images.reshape(*SCAN, *DET.shape), k_step=DET.k_step, beam_energy_kev=300)
    return data, gx, gy


@pytest.mark.parametrize("rotation_deg", [0.0, 17.0, 75.0, 123.0])
@pytest.mark.parametrize("flipped", [False, True])
def test_rotation_and_flip_are_recovered(rotation_deg, flipped):
    data, gx, gy = deflection_patterns(rotation_deg, flipped, descan=False)
    result = center_of_mass(data, descan_order=None)
    assert result.attrs["flipped"] == flipped
    error = (result.attrs["rotation_deg"] - rotation_deg + 90) % 180 - 90
    assert abs(error) < 1.0
    sign = np.sign(np.sum(result.com_x.values * gx))
    np.testing.assert_allclose(sign * result.com_x.values, gx, atol=1e-4)
    np.testing.assert_allclose(sign * result.com_y.values, gy, atol=1e-4)
    assert result.attrs["curl_residual_best"] < 0.01 * result.attrs["curl_residual_worst"]


def test_descan_is_removed_and_raw_is_kept_on_request():
    data, gx, gy = deflection_patterns(30.0)
    result = center_of_mass(data.chunk({"scan_y": 5, "scan_x": 7}))
    assert abs(float(result.com_kx.mean())) < 0.002
    assert abs(result.attrs["rotation_deg"] - 30.0) < 2.0, "the descan plane must not spoil the rotation"
    raw = center_of_mass(data, descan_order=None)
    assert float(raw.com_kx.mean()) == pytest.approx(-0.05 + 0.002 * 13.5, abs=0.003)


def test_detector_restricts_the_centre_of_mass():
    data, _, _ = deflection_patterns(0.0, descan=False)
    whole = center_of_mass(data, descan_order=None)
    inner = center_of_mass(data, detector=Circle(0.2), descan_order=None)
    np.testing.assert_allclose(inner.com_kx.values, whole.com_kx.values, atol=1e-4)
