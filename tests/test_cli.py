import numpy as np

from stemkit.cli import main
from tests.conftest import make_cube


def test_formats_lists_readers(capsys):
    assert main(["formats"]) == 0
    out = capsys.readouterr().out
    assert "npy" in out and "zarr" in out


def test_info_describes_a_file(tmp_path, capsys):
    path = tmp_path / "scan.npy"
    np.save(path, make_cube().values)
    assert main(["info", str(path), "--beam-energy-kev", "300", "--k-step", "0.025"]) == 0
    out = capsys.readouterr().out
    assert "'scan_y': 5" in out and "300.0 keV" in out and "dask, lazy" in out


def test_info_reports_missing_calibration_without_traceback(tmp_path, capsys):
    path = tmp_path / "scan.npy"
    np.save(path, make_cube().values)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert "beam_energy_kev" in err and "Traceback" not in err
