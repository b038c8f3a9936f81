"""Format-specific behaviour of the readers: layouts, scan shapes, calibrations, damaged files."""

from __future__ import annotations

import sys
import types

import h5py
import numpy as np
import pytest

import stemkit
from stemkit.data.units import k_to_inverse_angstrom
from stemkit.io.load import find_format
from tests.io import format_writers as w

CAL = {"k_step": 0.02, "beam_energy_kev": 300.0}


def _step(data, dim):
    return float(data[dim][1] - data[dim][0])


# --------------------------------------------------------------------------------------
# Merlin .mib
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
def test_mib_pixel_types_are_big_endian_and_come_back_native(tmp_path, dtype):
    data = w.cube(dtype=dtype)
    path = w.write_mib(tmp_path / "scan.mib", data, frames_per_trigger=4)
    loaded = stemkit.load(path, **CAL)
    assert loaded.dtype == np.dtype(dtype) and loaded.dtype.isnative
    np.testing.assert_array_equal(loaded.values, data)


def test_mib_without_scan_shape_is_a_flat_stack(tmp_path):
    data = w.cube()
    path = w.write_mib(tmp_path / "scan.mib", data)  # hdr: 1 frame per trigger
    with pytest.raises(stemkit.MissingCalibrationError, match=r"12 patterns: pass scan_shape"):
        stemkit.load(path, **CAL)
    np.testing.assert_array_equal(stemkit.load(path, scan_shape=(3, 4), **CAL).values, data)
    wrong = stemkit.load(path, scan_shape=(4, 3), **CAL)  # a wrong scan shape reshapes, it does not transpose
    np.testing.assert_array_equal(wrong.values.reshape(12, 16, 18), data.reshape(12, 16, 18))


def test_mib_line_trigger_hdr_gives_the_scan_shape(tmp_path):
    path = w.write_mib(tmp_path / "scan.mib", w.cube(), frames_per_trigger=4)
    data = stemkit.load(path, **CAL)
    assert data.shape[:2] == (3, 4)
    assert data.attrs["frames_per_trigger"] == 4 and data.attrs["exposure_s"] == pytest.approx(0.001)


def test_mib_rows_are_not_flipped_unlike_rosettasciio(tmp_path):
    from rsciio.quantumdetector import file_reader

    data = w.cube()
    path = w.write_mib(tmp_path / "scan.mib", data, frames_per_trigger=4)
    flipped = file_reader(str(path))[0]["data"]
    np.testing.assert_array_equal(stemkit.load(path, **CAL).values, np.asarray(flipped)[..., ::-1, :])


def test_mib_missing_whole_frames_against_the_hdr(tmp_path):
    path = w.write_mib(tmp_path / "scan.mib", w.cube(), frames_per_trigger=4)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 12 * 11])  # exactly one frame fewer
    with pytest.raises(stemkit.FileFormatError, match=r"announces 12 frames but the file holds 11"):
        stemkit.load(path, **CAL)


def test_mib_frames_out_of_sequence(tmp_path):
    path = w.write_mib(tmp_path / "scan.mib", w.cube(), hdr=False)
    content = bytearray(path.read_bytes())
    frame = len(content) // 12
    content[11 * frame : 11 * frame + 10] = b"MQ1,000099"
    path.write_bytes(bytes(content))
    with pytest.raises(stemkit.FileFormatError, match="frame numbers run from"):
        stemkit.load(path, scan_shape=(3, 4), **CAL)


def test_mib_raw_counter_dumps_are_refused(tmp_path):
    path = w.write_mib(tmp_path / "scan.mib", w.cube(), hdr=False)
    content = path.read_bytes().replace(b",U16,", b",R64,")
    path.write_bytes(content)
    with pytest.raises(stemkit.FileFormatError, match="R64"):
        stemkit.load(path, scan_shape=(3, 4), **CAL)


# --------------------------------------------------------------------------------------
# NanoMegas .blo
# --------------------------------------------------------------------------------------


def test_blo_calibrations_from_the_header(tmp_path):
    path = w.write_blo(tmp_path / "scan.blo", w.small_cube(), step_nm=(1.5, 2.5), beam_energy_v=300_000,
                       sdp=5000, camera_length=1500)
    data = stemkit.load(path)
    # a pixel is 1/50 cm on the screen, at 15 cm camera length: 1/750 rad
    expected = k_to_inverse_angstrom(1 / 750, "rad", 300.0)
    assert _step(data, "kx") == pytest.approx(expected) and _step(data, "ky") == pytest.approx(expected)
    assert (_step(data, "scan_y"), _step(data, "scan_x")) == pytest.approx((1.5, 2.5))
    assert data.attrs["beam_energy_kev"] == 300.0 and data.attrs["camera_length_mm"] == 150.0
    assert "Precession" in data.attrs["note"]


def test_blo_matches_rosettasciio(tmp_path, monkeypatch):
    # rsciio.blockfile imports scikit-image only for its writer; a stub lets the reader run
    monkeypatch.setitem(sys.modules, "skimage", sys.modules.get("skimage") or types.ModuleType("skimage"))
    from rsciio.blockfile import file_reader

    path = w.write_blo(tmp_path / "scan.blo", w.small_cube())
    np.testing.assert_array_equal(stemkit.load(path).values, file_reader(str(path))[0]["data"])


def test_blo_with_a_bad_frame_marker(tmp_path):
    path = w.write_blo(tmp_path / "scan.blo", w.small_cube())
    content = bytearray(path.read_bytes())
    content[-(16 * 16 + 6)] = 0x00  # the last pattern's AA 55
    path.write_bytes(bytes(content))
    with pytest.raises(stemkit.FileFormatError, match="frame marker"):
        stemkit.load(path)


# --------------------------------------------------------------------------------------
# DigitalMicrograph .dm3 / .dm4
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [3, 4])
@pytest.mark.parametrize("lazy", [False, True])
def test_dm_stemx_layout_with_scan_fastest_is_transposed(tmp_path, version, lazy):
    data = w.cube()
    path = w.write_dm_cube(tmp_path / f"scan.dm{version}", data, version=version, scan_fastest=True)
    loaded = stemkit.load(path, lazy=lazy)
    np.testing.assert_array_equal(loaded.values, data)
    assert (_step(loaded, "ky"), _step(loaded, "kx")) == pytest.approx((0.012, 0.01))
    assert (_step(loaded, "scan_y"), _step(loaded, "scan_x")) == pytest.approx((0.5, 0.75))
    assert "STEMx" in loaded.attrs["dm_layout"]
    if lazy:
        assert loaded.chunks[2:] == ((16,), (18,))


def test_dm_angles_need_the_beam_energy(tmp_path):
    data = w.cube()
    path = w.write_dm_cube(tmp_path / "mrad.dm4", data, version=4, k_step_inv_nm=(0.3, 0.25),
                           units=("µm", "mrad"))
    loaded = stemkit.load(path)
    assert _step(loaded, "kx") == pytest.approx(k_to_inverse_angstrom(0.25, "mrad", 200.0))
    assert _step(loaded, "scan_y") == pytest.approx(500.0)
    no_voltage = w.write_dm_cube(tmp_path / "mrad2.dm4", data, version=4, units=("nm", "mrad"), voltage=None)
    with pytest.raises(stemkit.MissingCalibrationError) as info:
        stemkit.load(no_voltage)
    assert "beam_energy_kev" in str(info.value) and "k_step" in str(info.value)


def test_dm_with_only_2d_images_is_refused(tmp_path):
    from tests.io.dm_writer import image_tags, write_dm

    image = image_tags(np.ones((6, 7), "float32"), scales=[1, 1], origins=[0, 0], units=["nm", "nm"])
    path = write_dm(tmp_path / "image.dm3", [image], version=3)
    with pytest.raises(stemkit.FileFormatError, match="no 4D-STEM dataset"):
        stemkit.load(path)


def test_dm_3d_stack_is_flat(tmp_path):
    from tests.io.dm_writer import image_tags, write_dm

    stack = w.cube().reshape(12, 16, 18)
    image = image_tags(stack, scales=[0.1, 0.1, 1], origins=[0, 0, 0], units=["1/nm", "1/nm", ""],
                       microscope_info=[("Voltage", 300000.0)])
    path = write_dm(tmp_path / "stack.dm4", [image], version=4)
    with pytest.raises(stemkit.MissingCalibrationError, match="scan_shape"):
        stemkit.load(path)
    np.testing.assert_array_equal(stemkit.load(path, scan_shape=(3, 4)).values, w.cube())


def test_dm_data_shorter_than_its_dimensions(tmp_path):
    path = w.write_dm_cube(tmp_path / "scan.dm3", w.cube(), version=3)
    content = path.read_bytes()
    # claim a 4th scan row in the Dimensions group: the Data array no longer matches
    tag = b"%%%%\x00\x00\x00\x01\x00\x00\x00\x03"  # a LONG value follows
    assert content.count(tag + b"\x03\x00\x00\x00") == 1
    patched = content.replace(tag + b"\x03\x00\x00\x00", tag + b"\x04\x00\x00\x00")
    path.write_bytes(patched)
    with pytest.raises(stemkit.FileFormatError, match="inconsistent"):
        stemkit.load(path)


# --------------------------------------------------------------------------------------
# EMPAD .xml + .raw
# --------------------------------------------------------------------------------------

EMPAD_DATA = w.cube(detector=(128, 128), dtype="float32", pattern_step=100_000)


def test_empad_drops_the_two_metadata_rows(tmp_path):
    path = w.write_empad(tmp_path / "scan.xml", EMPAD_DATA)
    data = stemkit.load(path)
    assert data.shape == (3, 4, 128, 128) and float(data.min()) >= 0  # the metadata rows hold -1
    assert data.attrs["raw_file"] == "scan_x4_y3.raw" and data.attrs["camera_length_mm"] == pytest.approx(369)


def test_empad_scan_size_from_the_raw_file_name(tmp_path):
    path = w.write_empad(tmp_path / "scan.xml", EMPAD_DATA)
    text = path.read_text()
    start, end = text.index('<scan_parameters mode="acquire">'), text.index("</scan_parameters>")
    path.write_text(text[:start] + text[end + len("</scan_parameters>"):])
    np.testing.assert_array_equal(stemkit.load(path).values, EMPAD_DATA)


def test_empad_series_is_a_flat_stack(tmp_path):
    path = w.write_empad(tmp_path / "scan.xml", EMPAD_DATA)
    text = path.read_text().replace('mode="acquire"', 'mode="series"')
    path.write_text(text.replace("<scan_size>", "<series_count>12</series_count><scan_size>"))
    with pytest.raises(stemkit.MissingCalibrationError, match="scan_shape"):
        stemkit.load(path)
    np.testing.assert_array_equal(stemkit.load(path, scan_shape=(3, 4)).values, EMPAD_DATA)


def test_empad_missing_raw_file(tmp_path):
    path = w.write_empad(tmp_path / "scan.xml", EMPAD_DATA)
    path.with_name("scan_x4_y3.raw").unlink()
    with pytest.raises(FileNotFoundError, match="scan_x4_y3.raw"):
        stemkit.load(path)


def test_other_xml_is_not_empad(tmp_path):
    path = tmp_path / "notes.xml"
    path.write_text("<root><comment>not a detector file</comment></root>")
    with pytest.raises(stemkit.FileFormatError, match="notes.xml"):
        stemkit.load(path)


# --------------------------------------------------------------------------------------
# HyperSpy .hspy
# --------------------------------------------------------------------------------------


def test_hspy_angles_and_origin(tmp_path):
    path = w.write_hspy(tmp_path / "scan.hspy", w.cube(), k_step=(0.5, 0.4), k_units="mrad", k_origin=(7.5, 9))
    data = stemkit.load(path)
    assert _step(data, "kx") == pytest.approx(k_to_inverse_angstrom(0.4, "mrad", 200.0))
    assert float(data.ky[7]) == pytest.approx(-0.5 * _step(data, "ky"))
    assert data.attrs["convergence_mrad"] == 1.5


def test_hspy_with_signal_axes_first_is_transposed(tmp_path):
    from rsciio.hspy import file_reader, file_writer

    data = w.cube()
    path = w.write_hspy(tmp_path / "scan.hspy", data)
    signal = file_reader(str(path))[0]
    signal["data"] = np.ascontiguousarray(data.transpose(2, 3, 0, 1))
    signal["axes"] = [signal["axes"][i] for i in (2, 3, 0, 1)]
    signal["package_info"] = {"name": "stemkit-tests", "version": "0"}
    for key in ("tmp_parameters", "learning_results"):
        signal.setdefault(key, {})
    moved = tmp_path / "moved.hspy"
    file_writer(str(moved), signal, show_progressbar=False)
    loaded = stemkit.load(moved)
    np.testing.assert_array_equal(loaded.values, data)
    assert _step(loaded, "kx") == pytest.approx(0.01)


def test_hspy_file_of_another_hdf5_layout(tmp_path):
    path = tmp_path / "scan.hspy"
    w.write_py4dstem(path, w.cube())
    with pytest.raises(stemkit.FileFormatError, match="scan.hspy"):
        stemkit.load(path, **CAL)


# --------------------------------------------------------------------------------------
# EMD 1.0 / py4DSTEM
# --------------------------------------------------------------------------------------


def _write_emd_v1(path, data, *, q_start=-0.8, units=(b"[n_m]", b"[n_m^-1]"), cubes=1):
    """NCEM EMD 1.0 (as Prismatic writes it): int group types, full dim vectors dim1..dim4, bytes attrs."""
    with h5py.File(path, "w") as handle:
        top = handle.create_group("4DSTEM_simulation")
        top.attrs.update({"emd_group_type": np.int32(2), "version_major": np.int32(0), "version_minor": np.int32(5)})
        parameters = top.create_group("metadata/metadata_0/original/simulation_parameters")
        parameters.attrs["E"] = np.float32(80.0)
        for index in range(cubes):
            group = top.create_group(f"data/datacubes/CBED_array_depth{index:04d}")
            group.attrs["emd_group_type"] = np.int32(1)
            group.create_dataset("datacube", data=data + index, chunks=(1, 1, *data.shape[2:]))
            axes = [np.arange(n) * 0.5 for n in data.shape[:2]]
            axes += [q_start + np.arange(n) * 0.1 for n in data.shape[2:]]
            for axis, (name, values) in enumerate(zip((b"R_x", b"R_y", b"Q_x", b"Q_y"), axes), start=1):
                dim = group.create_dataset(f"dim{axis}", data=values.astype("float32"))
                dim.attrs.update({"name": np.bytes_(name), "units": np.bytes_(units[axis > 2])})
    return path


def test_emd_v1_full_dim_vectors_and_origin(tmp_path):
    data = w.cube(dtype="float32")
    path = _write_emd_v1(tmp_path / "sim.emd", data)
    loaded = stemkit.load(path)
    np.testing.assert_array_equal(loaded.values, data)
    assert _step(loaded, "scan_x") == pytest.approx(0.5)
    assert _step(loaded, "kx") == pytest.approx(0.01, rel=1e-5)
    assert float(loaded.ky[8]) == pytest.approx(0.0, abs=1e-6)  # -0.8 + 8 * 0.1
    assert loaded.attrs["beam_energy_kev"] == 80.0


def test_emd_with_several_datacubes_reads_the_first_and_lists_the_rest(tmp_path):
    data = w.cube(dtype="float32")
    loaded = stemkit.load(_write_emd_v1(tmp_path / "sim.emd", data, cubes=2))
    np.testing.assert_array_equal(loaded.values, data)
    assert loaded.attrs["emd_other_datacubes"] == ["4DSTEM_simulation/data/datacubes/CBED_array_depth0001"]


def test_emd_non_uniform_dim_is_uncalibrated(tmp_path):
    path = _write_emd_v1(tmp_path / "sim.emd", w.cube(dtype="float32"))
    with h5py.File(path, "r+") as handle:
        dim = handle["4DSTEM_simulation/data/datacubes/CBED_array_depth0000/dim4"]
        values = dim[()]
        values[-1] += 0.05
        dim[...] = values
    with pytest.raises(stemkit.MissingCalibrationError, match="k_step"):
        stemkit.load(path)


def test_py4dstem_pixel_dims_fall_back_to_the_calibration_group(tmp_path):
    path = w.write_py4dstem(tmp_path / "cube.h5", w.cube(dtype="float32"), r_units="pixels", q_units="pixels")
    with h5py.File(path, "r+") as handle:
        calibration = handle["datacube_root/metadatabundle/calibration"]
        new = {"Q_pixel_size": 0.25, "Q_pixel_units": "1/nm", "R_pixel_size": 2.0, "R_pixel_units": "A"}
        for key, value in new.items():
            del calibration[key]
            calibration.create_dataset(key, data=value)
    data = stemkit.load(path, beam_energy_kev=300)
    assert _step(data, "kx") == pytest.approx(0.025) and _step(data, "scan_x") == pytest.approx(0.2)


def test_h5_without_any_known_layout(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle["images"] = np.zeros((2, 3, 4))
    with pytest.raises(stemkit.FileFormatError, match="none of the formats"):
        stemkit.load(path)
    with pytest.raises(stemkit.FileFormatError, match="no EMD data group"):
        stemkit.load(path, format="emd")


# --------------------------------------------------------------------------------------
# DECTRIS Arina
# --------------------------------------------------------------------------------------


def test_arina_frames_span_several_data_files(tmp_path):
    data = w.cube()
    path = w.write_arina(tmp_path / "run_master.h5", data, frames_per_file=5)
    fmt = find_format(path)
    assert fmt.name == "arina"
    assert [p.name for p in fmt.data_files(path)] == [
        "run_master.h5", "run_data_000001.h5", "run_data_000002.h5", "run_data_000003.h5"
    ]
    for lazy in (False, True):
        np.testing.assert_array_equal(stemkit.load(path, lazy=lazy, scan_shape=(3, 4), k_step=0.02).values, data)


def test_arina_missing_data_file(tmp_path):
    path = w.write_arina(tmp_path / "run_master.h5", w.cube(), frames_per_file=5)
    (tmp_path / "run_data_000002.h5").unlink()
    with pytest.raises(FileNotFoundError, match="run_data_000002.h5"):
        stemkit.load(path, scan_shape=(3, 4), k_step=0.02)


def test_arina_fewer_frames_than_announced(tmp_path):
    path = w.write_arina(tmp_path / "run_master.h5", w.cube(), frames_per_file=5)
    with h5py.File(path, "r+") as handle:
        del handle["entry/data/data_000003"]
    with pytest.raises(stemkit.FileFormatError, match="announces 12 frames"):
        stemkit.load(path, scan_shape=(3, 4), k_step=0.02)


def test_arina_beam_centre_is_the_k_origin(tmp_path):
    path = w.write_arina(tmp_path / "run_master.h5", w.cube(), beam_center=(6.0, 11.0))
    data = stemkit.load(path, scan_shape=(3, 4), k_step=0.02)
    assert float(data.ky[6]) == 0.0 and float(data.kx[11]) == 0.0


def test_arina_and_py4dstem_are_told_apart(tmp_path):
    arina = w.write_arina(tmp_path / "run_master.h5", w.cube())
    cube = w.write_py4dstem(tmp_path / "cube.h5", w.cube())
    assert find_format(arina).name == "arina" and find_format(cube).name == "emd"
    with pytest.raises(stemkit.FileFormatError, match="cube.h5"):
        stemkit.load(cube, format="arina")


# --------------------------------------------------------------------------------------
# NanoMegas TopSpin .app5
# --------------------------------------------------------------------------------------


def test_app5_single_row_scan(tmp_path):
    data = w.cube(scan=(1, 5), dtype="float32")
    loaded = stemkit.load(w.write_app5(tmp_path / "row.app5", data), scan_step_nm=0.75)
    assert loaded.shape == (1, 5, 16, 18)
    np.testing.assert_array_equal(loaded.values, data)


def test_app5_interrupted_scan(tmp_path):
    path = w.write_app5(tmp_path / "scan.app5", w.cube(dtype="float32"))
    with h5py.File(path, "r+") as handle:
        del handle[f"{w.APP5_EXPERIMENT}/{w.APP5_SCAN}/11"]
    with pytest.raises(stemkit.FileFormatError, match="not a whole number of rows of 4"):
        stemkit.load(path)


def test_app5_with_images_only(tmp_path):
    path = w.write_app5(tmp_path / "scan.app5", w.cube(dtype="float32"))
    with h5py.File(path, "r+") as handle:
        del handle[f"{w.APP5_EXPERIMENT}/{w.APP5_SCAN}"]
    with pytest.raises(stemkit.FileFormatError, match="no TopSpin 4D scan"):
        stemkit.load(path)
