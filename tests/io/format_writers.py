"""Writers of small test files in every format stemkit reads.

Each writer takes a ``(scan_y, scan_x, ky, kx)`` array (or, where the format has no scan
shape, writes the patterns in scan order as a flat series) and the calibrations to record,
and returns the path to pass to ``stemkit.load``. Where the format has a writer
(rosettasciio's ``hspy``), it is used; the others are written byte by byte from the
format's published layout, or with h5py after the layout of a real file.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from tests.io.dm_writer import image_tags, text, write_dm

SCAN = (3, 4)
DETECTOR = (16, 18)


def cube(scan=SCAN, detector=DETECTOR, dtype="uint16", pattern_step=1000) -> np.ndarray:
    """Distinct values for every pattern and pixel: ``pattern * pattern_step + row * n_kx + column`` (mod the dtype)."""
    n_y, n_x = scan
    n_ky, n_kx = detector
    p = np.arange(n_y * n_x).reshape(n_y, n_x, 1, 1)
    r = np.arange(n_ky).reshape(1, 1, n_ky, 1)
    c = np.arange(n_kx).reshape(1, 1, 1, n_kx)
    values = p * pattern_step + r * n_kx + c
    if np.dtype(dtype).kind in "ui":
        values = values % (np.iinfo(dtype).max + 1)
    return values.astype(dtype)


def small_cube(dtype="uint8", size=16) -> np.ndarray:
    """Square patterns for uint8 formats: ``(row * 16 + column + 7 * pattern) % 256``."""
    p = np.arange(SCAN[0] * SCAN[1]).reshape(*SCAN, 1, 1)
    r = np.arange(size).reshape(1, 1, size, 1)
    c = np.arange(size).reshape(1, 1, 1, size)
    return ((r * 16 + c + 7 * p) % 256).astype(dtype)


# --------------------------------------------------------------------------------------
# Quantum Detectors Merlin .mib (+ .hdr)
# --------------------------------------------------------------------------------------

MIB_TYPES = {np.dtype("uint8"): "U08", np.dtype("uint16"): "U16", np.dtype("uint32"): "U32"}


def mib_header(number: int, n_ky: int, n_kx: int, kind: str, header_bytes: int = 384) -> bytes:
    fields = [
        "MQ1", f"{number:06d}", f"{header_bytes:05d}", "01", f"{n_kx:04d}", f"{n_ky:04d}", kind, "   1x1", "01",
        "2021-05-07 18:51:10.905800", "0.001000", "0", "0", "0",
        *["4.000000E+1", "5.110000E+2"] + ["0.000000E+0"] * 6,
        "3RX", *["100"] * 27, "MQ1A", "2021-05-07T16:51:10.905800928Z", "1000000ns", "12", "",
    ]
    head = ",".join(fields).encode("ascii")
    assert len(head) <= header_bytes
    return head + b" " * (header_bytes - len(head))


def write_mib(path: Path, data: np.ndarray, *, frames_per_trigger: int | None = None, hdr: bool = True) -> Path:
    """Frames in scan order, each an MQ1 header + big-endian pixels; ``.hdr`` beside it."""
    frames = data.reshape(-1, *data.shape[-2:])
    kind = MIB_TYPES[frames.dtype]
    big = frames.astype(frames.dtype.newbyteorder(">"))
    with open(path, "wb") as handle:
        for i, frame in enumerate(big):
            handle.write(mib_header(i + 1, *frame.shape, kind))
            handle.write(frame.tobytes())
    if hdr:
        lines = [
            "HDR,", "Time and Date Stamp (day, mnth, yr, hr, min, s):\t07/05/2021 18:50:41",
            "Chip Type (Medipix 3.0, Medipix 3.1, Medipix 3RX):\tMedipix 3RX", "Assembly Size (NX1, 2X2):\t   1x1",
            "Chip Mode  (SPM, CSM, CM, CSCM):\tSPM", "Counter Depth (number):\t12",
            f"Frames in Acquisition (Number):\t{len(frames)}",
            f"Frames per Trigger (Number):\t{frames_per_trigger or 1}", "Software Version:\t0.76.1.101", "End\t",
        ]
        body = "\r\n".join(lines).encode("ascii")
        path.with_suffix(".hdr").write_bytes(body + b" " * (2048 - len(body)))
    return path


# --------------------------------------------------------------------------------------
# NanoMegas .blo
# --------------------------------------------------------------------------------------

BLO_HEADER = np.dtype(
    [
        ("ID", "S6"), ("MAGIC", "<u2"), ("Data_offset_1", "<u4"), ("Data_offset_2", "<u4"), ("UNKNOWN1", "<u4"),
        ("DP_SZ", "<u2"), ("DP_rotation", "<u2"), ("NX", "<u2"), ("NY", "<u2"), ("Scan_rotation", "<u2"),
        ("SX", "<f8"), ("SY", "<f8"), ("Beam_energy", "<u4"), ("SDP", "<u2"), ("Camera_length", "<u4"),
        ("Acquisition_time", "<f8"), *[(f"Centering_N{i}", "<f8") for i in range(8)],
        *[(f"Distortion_N{i:02d}", "<f8") for i in range(14)],
    ]
)


def write_blo(
    path: Path, data: np.ndarray, *, step_nm=(0.5, 0.75), beam_energy_v=200_000, sdp=6226, camera_length=2000
) -> Path:
    """Header, note, virtual bright field, then AA 55 + u4 number + pixels per pattern (x fastest)."""
    n_y, n_x, size, size_x = data.shape
    assert size == size_x, "block files hold square patterns"
    offset_1 = 0x1000
    offset_2 = offset_1 + n_y * n_x
    offset_2 += offset_2 % 16
    header = np.zeros(1, dtype=BLO_HEADER)
    values = {
        "ID": b"IMGBLO", "MAGIC": 0x0102, "Data_offset_1": offset_1, "Data_offset_2": offset_2, "UNKNOWN1": 131141,
        "DP_SZ": size, "NX": n_x, "NY": n_y, "SX": step_nm[1], "SY": step_nm[0], "Beam_energy": beam_energy_v,
        "SDP": sdp, "Camera_length": camera_length, "Acquisition_time": 42339.65, "Scan_rotation": 2500,
    }
    for key, value in values.items():
        header[key] = value
    note = b"Precession angle : \r\nCamera gamma : on"
    with open(path, "wb") as handle:
        handle.write(header.tobytes() + note)
        handle.write(b"\x00" * (offset_1 - handle.tell()))
        handle.write(data.mean(axis=(2, 3)).astype("uint8").tobytes())
        handle.write(b"\x00" * (offset_2 - handle.tell()))
        for i, pattern in enumerate(data.reshape(-1, size, size)):
            handle.write(b"\xaa\x55" + struct.pack("<I", i) + pattern.astype("uint8").tobytes())
    return path


# --------------------------------------------------------------------------------------
# Gatan DigitalMicrograph .dm3 / .dm4
# --------------------------------------------------------------------------------------


def write_dm_cube(
    path: Path,
    data: np.ndarray,
    *,
    version: int,
    step_nm=(0.5, 0.75),
    k_step_inv_nm=(0.12, 0.1),
    k_origin=(8, 9),
    units=("nm", "1/nm"),
    voltage: float | None = 200_000.0,
    scan_fastest: bool = False,
) -> Path:
    """A thumbnail-sized 2D image, then the 4D cube with calibrations (fastest dimension first in the tags).

    ``scan_fastest`` writes the GMS STEMx layout, the scan dimensions fastest.
    """
    scan = ([step_nm[1], step_nm[0]], [0.0, 0.0], [units[0]] * 2)
    detector = ([k_step_inv_nm[1], k_step_inv_nm[0]], [k_origin[1], k_origin[0]], [units[1]] * 2)
    first, second = (scan, detector) if scan_fastest else (detector, scan)
    stored = data.transpose(2, 3, 0, 1) if scan_fastest else data
    info = [("Voltage", voltage)] if voltage else []
    info += [("STEM Camera Length", 100.0), ("Microscope", text("Test TEM"))]
    thumbnail = image_tags(np.arange(20, dtype="uint8").reshape(4, 5), scales=[1, 1], origins=[0, 0], units=["", ""])
    cube_tags = image_tags(
        np.ascontiguousarray(stored),
        scales=first[0] + second[0],
        origins=first[1] + second[1],
        units=first[2] + second[2],
        microscope_info=info,
    )
    return write_dm(path, [thumbnail, cube_tags], version=version)


# --------------------------------------------------------------------------------------
# EMPAD .xml + .raw
# --------------------------------------------------------------------------------------

EMPAD_XML = """<root name="{name}"><timestamp timestamp="1774471672.586728" isoformat="2026-03-25T16:47:52.586728"/>\
<software_version>1.2.2  (2021-08-20)</software_version><raw_file filename="{raw}"/>\
<exposure_time>1</exposure_time>\
<scan_parameters mode="acquire"><scan_size>0.6</scan_size><scan_resolution_y>{n_y}</scan_resolution_y>\
<scan_resolution_x>{n_x}</scan_resolution_x></scan_parameters>\
<iom_measurements><scan_rotation>0.0</scan_rotation>{fov}{k}\
<nominal_camera_length>0.369</nominal_camera_length>{energy}</iom_measurements></root>"""


def write_empad(
    path: Path,
    data: np.ndarray,
    *,
    fov_m: float | None = 1.44e-9,
    k_pixel: float | None = 1.826537e-10,
    high_voltage: float | None = 300000.0,
) -> Path:
    """XML + raw float32 frames of 130 x 128 (128 rows of pixels, 2 rows of metadata), x fastest.

    ``fov_m``: the scan field of view along the longer scan side, stored times 0.72 as the
    EMPAD software does. ``k_pixel``: ``calibrated_pixelsize`` (rosettasciio reads 1e9 times it as 1/nm).
    """
    n_y, n_x, rows, cols = data.shape
    assert (rows, cols) == (128, 128), "EMPAD frames are 128 x 128"
    raw = path.with_name(f"scan_x{n_x}_y{n_y}.raw")
    frames = np.full((n_y, n_x, 130, 128), -1.0, dtype="<f4")
    frames[:, :, :128, :] = data
    frames.tofile(raw)
    fov = "" if fov_m is None else (
        f"<full_scan_field_of_view><scale_factor>0.72</scale_factor><x>{fov_m * 0.72!r}</x>"
        f"<y>{fov_m * 0.72!r}</y></full_scan_field_of_view>"
    )
    k = "" if k_pixel is None else f"<calibrated_pixelsize>{k_pixel!r}</calibrated_pixelsize>"
    energy = "" if high_voltage is None else f"<high_voltage>{high_voltage!r}</high_voltage>"
    path.write_text(EMPAD_XML.format(name=path.stem, raw=raw.name, n_y=n_y, n_x=n_x, fov=fov, k=k, energy=energy))
    return path


# --------------------------------------------------------------------------------------
# HyperSpy .hspy
# --------------------------------------------------------------------------------------


def write_hspy(
    path: Path,
    data: np.ndarray,
    *,
    step_nm=(0.5, 0.75),
    k_step=(0.12, 0.1),
    k_units="1/nm",
    k_origin=(8, 9),
    beam_energy_kev: float | None = 200.0,
) -> Path:
    """rosettasciio's hspy writer; axes ``y, x`` (navigation) and ``ky, kx`` (signal)."""
    from rsciio.hspy import file_writer

    names = ("y", "x", "ky", "kx")
    scales = (*step_nm, *k_step)
    offsets = (0.0, 0.0, -k_origin[0] * k_step[0], -k_origin[1] * k_step[1])
    units = ("nm", "nm", k_units, k_units)
    axes = [
        {"name": n, "size": s, "scale": sc, "offset": o, "units": u, "navigate": i < 2}
        for i, (n, s, sc, o, u) in enumerate(zip(names, data.shape, scales, offsets, units))
    ]
    tem = {"camera_length": 100.0, "convergence_angle": 1.5}
    if beam_energy_kev is not None:
        tem["beam_energy"] = beam_energy_kev
    signal = {
        "data": data,
        "axes": axes,
        "metadata": {
            "General": {"title": "test cube"},
            "Signal": {"signal_type": "electron_diffraction"},
            "Acquisition_instrument": {"TEM": tem},
        },
        "original_metadata": {},
        "attributes": {"_lazy": False},
        "tmp_parameters": {},
        "learning_results": {},
        "models": {},
        "package_info": {"name": "stemkit-tests", "version": "0"},
    }
    file_writer(str(path), signal, show_progressbar=False)
    return path


# --------------------------------------------------------------------------------------
# py4DSTEM / emdfile EMD 1.0 .h5 (layout of a file written by emdfile)
# --------------------------------------------------------------------------------------


def write_py4dstem(
    path: Path,
    data: np.ndarray,
    *,
    r_step=(0.5, 0.75),
    r_units="nm",
    q_step=(0.012, 0.01),
    q_units="A^-1",
    q_start=(0.0, 0.0),
) -> Path:
    """Root ``emd_group_type='file'``; ``<name>_root/datacube`` (``'array'``): ``data`` and ``dim0``...``dim3``."""
    import h5py

    with h5py.File(path, "w") as handle:
        handle.attrs.update(
            {"emd_group_type": "file", "version_major": 1, "version_minor": 0, "authoring_program": "emdfile",
             "authoring_user": "", "UUID": "00000000-0000-0000-0000-000000000000"}
        )
        root = handle.create_group("datacube_root")
        root.attrs.update({"emd_group_type": "root", "python_class": "Root"})
        cube_group = root.create_group("datacube")
        cube_group.attrs.update({"emd_group_type": "array", "python_class": "DataCube"})
        cube_group.create_dataset("data", data=data).attrs["units"] = "pixel intensity"
        starts = (0.0, 0.0, *q_start)
        steps = (*r_step, *q_step)
        for axis, (name, units) in enumerate(zip(("Rx", "Ry", "Qx", "Qy"), (r_units, r_units, q_units, q_units))):
            dim = cube_group.create_dataset(f"dim{axis}", data=np.array([starts[axis], starts[axis] + steps[axis]]))
            dim.attrs.update({"name": name, "units": units})
        bundle = root.create_group("metadatabundle")
        bundle.attrs["emd_group_type"] = "metadatabundle"
        calibration = bundle.create_group("calibration")
        calibration.attrs.update({"emd_group_type": "metadata", "python_class": "Calibration"})
        for key, value in {"QR_flip": False, "Q_pixel_size": q_step[1], "Q_pixel_units": q_units,
                           "R_pixel_size": r_step[1], "R_pixel_units": r_units}.items():
            calibration.create_dataset(key, data=value)
    return path


# --------------------------------------------------------------------------------------
# DECTRIS Arina master + data files (layout of a file written by the detector)
# --------------------------------------------------------------------------------------


def write_arina(
    path: Path,
    data: np.ndarray,
    *,
    frames_per_file: int = 8,
    photon_energy_ev: float | None = 300000.0,
    beam_center=(0.0, 0.0),
) -> Path:
    """``<stem>_master.h5`` linking ``/entry/data/data_NNNNNN`` to bitshuffle/LZ4 ``<stem>_data_NNNNNN.h5`` files."""
    import h5py
    import hdf5plugin

    frames = data.reshape(-1, *data.shape[-2:])
    stem = path.name.removesuffix("_master.h5")
    with h5py.File(path, "w") as master:
        master.attrs["default"] = np.bytes_("entry")
        entry = master.create_group("entry")
        entry.attrs.update({"NX_class": np.bytes_("NXentry"), "default": np.bytes_("data")})
        group = entry.create_group("data")
        group.attrs.update({"NX_class": np.bytes_("NXdata"), "signal": np.bytes_("data_000001")})
        for index, start in enumerate(range(0, len(frames), frames_per_file), start=1):
            name = f"{stem}_data_{index:06d}.h5"
            _write_arina_data(path.parent / name, frames[start : start + frames_per_file], start, hdf5plugin)
            group[f"data_{index:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
        detector = entry.create_group("instrument/detector")
        detector.attrs["NX_class"] = np.bytes_("NXdetector")
        fields = {
            "beam_center_x": beam_center[1], "beam_center_y": beam_center[0], "count_time": 9.95e-05,
            "description": np.bytes_("Dectris ARINA CZT"), "detector_distance": 0.0, "x_pixel_size": 1e-4,
            "y_pixel_size": 1e-4, "frame_time": 9.96e-05, "threshold_energy": 17500.0,
        }
        for key, value in fields.items():
            detector.create_dataset(key, data=value)
        specific = detector.create_group("detectorSpecific")
        specific_fields = {
            "nimages": np.uint64(1), "ntrigger": np.uint64(len(frames)), "compression": np.bytes_("bslz4"),
            "x_pixels_in_detector": np.uint64(frames.shape[2]), "y_pixels_in_detector": np.uint64(frames.shape[1]),
        }
        if photon_energy_ev is not None:
            specific_fields["photon_energy"] = photon_energy_ev
        for key, value in specific_fields.items():
            specific.create_dataset(key, data=value)
    return path


def _write_arina_data(path: Path, frames: np.ndarray, start: int, hdf5plugin) -> None:
    import h5py

    with h5py.File(path, "w") as handle:
        entry = handle.create_group("entry")
        entry.attrs["NX_class"] = np.bytes_("NXentry")
        group = entry.create_group("data")
        group.attrs["NX_class"] = np.bytes_("NXdata")
        dataset = group.create_dataset(
            "data", data=frames, chunks=(1, *frames.shape[1:]), **hdf5plugin.Bitshuffle(cname="lz4")
        )
        dataset.attrs.update({"image_nr_low": np.uint64(start + 1), "image_nr_high": np.uint64(start + len(frames))})


# --------------------------------------------------------------------------------------
# NanoMegas TopSpin .app5 (layout of a file exported by TopSpin)
# --------------------------------------------------------------------------------------

APP5_EXPERIMENT = "18d9446f-22bf-4fb1-8d13-338174e75d20"
APP5_SCAN = "3526f008-a687-41fb-a21e-c21362241492"
APP5_IMAGE = "b0212ada-90b1-4117-8ed5-355717e4910b"


def _app5_items(items: dict) -> str:
    return "".join(
        f'<Item><Name Serializer="String" Version="1">{k}</Name>'
        f'<Value Serializer="Double" Version="1">{v}</Value></Item>'
        for k, v in items.items()
    )


def _app5_pattern_xml(x: float, y: float, k_rad: tuple[float, float], shape: tuple[int, int]) -> bytes:
    axes = "".join(
        f'<{axis} Serializer="ArrayCalibrationSerializer" Version="1">'
        f'<Offset Serializer="Double" Version="1">{-n / 2 * step!r}</Offset>'
        f'<Scale Serializer="Double" Version="1">{step!r}</Scale>'
        f'<Type Serializer="CalibrationTypeSerializer" Version="1"><Index Serializer="Int32" Version="1">2</Index>'
        f'<Text Serializer="String" Version="1">Angle</Text></Type></{axis}>'
        for axis, step, n in (("X", k_rad[1], shape[1]), ("Y", k_rad[0], shape[0]))
    )
    position = (
        '<Item><Name Serializer="String" Version="1">RequestedBeamPosition</Name>'
        f'<Value Serializer="ImagePositionSerializer" Version="1"><X Serializer="Double" Version="1">{x!r}</X>'
        f'<Y Serializer="Double" Version="1">{y!r}</Y></Value></Item>'
    )
    return (
        '<?xml version="1.0" encoding="utf-16"?>\r\n<Metadata Serializer="SeriesItemSerializer" Version="1">'
        f'<Calibration Serializer="ImageCalibrationSerializer" Version="1">{axes}</Calibration>'
        f'<Metadata Serializer="DictionarySerializer" Version="1">{position}</Metadata></Metadata>'
    ).encode("ascii")


def write_app5(
    path: Path,
    data: np.ndarray,
    *,
    step_nm=(0.5, 0.75),
    k_rad=(2e-4, 1.5e-4),
    high_voltage: float | None = 300000.0,
) -> Path:
    """Experiment group (procedure XML), a 2D image, and the scan: one ``<i>/Data`` + ``<i>/Metadata`` per position."""
    import h5py

    n_y, n_x = data.shape[:2]
    settings = {"DiffractionCameraLength": 0.14, "IsPrecessionEnabled": "True",
                "PrecessionHardwarePrecessionAngle": 0.00872664625997165}
    if high_voltage is not None:
        settings["HighVoltage"] = high_voltage
    procedure = (
        "<?xml version='1.0' encoding='us-ascii'?>\n<Metadata Serializer=\"ProcedureDocumentSerializer\" Version=\"2\">"
        f"<Title Serializer=\"String\" Version=\"1\">test</Title><ProcedureData>{_app5_items({'FrameTime': 0.01})}"
        f"</ProcedureData><HardwareSettings>{_app5_items(settings)}</HardwareSettings></Metadata>"
    )
    with h5py.File(path, "w") as handle:
        handle["Version"] = np.bytes_("1")
        experiment = handle.create_group(APP5_EXPERIMENT)
        experiment["Metadata"] = np.bytes_(procedure)
        experiment["Version"] = np.bytes_("1")
        experiment[APP5_IMAGE] = data.sum(axis=(2, 3)).astype("float64")
        scan = experiment.create_group(APP5_SCAN)
        for index, pattern in enumerate(data.reshape(-1, *data.shape[2:])):
            iy, ix = divmod(index, n_x)
            group = scan.create_group(str(index))
            group["Data"] = pattern
            x, y = 1e-7 + ix * step_nm[1] * 1e-9, -6.4e-7 + iy * step_nm[0] * 1e-9
            group["Metadata"] = np.bytes_(_app5_pattern_xml(x, y, k_rad, pattern.shape))
    return path
