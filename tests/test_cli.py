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


def test_train_then_orient_a_file(tmp_path, capsys):
    """`stemkit train` writes resumable checkpoints and weights; `stemkit orient` maps a file with them."""
    from stemkit import load, save
    from stemkit.physics.specimens import polycrystal

    runs, weights = tmp_path / "run", tmp_path / "weights"
    tiny = ["--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--feedforward", "32", "--max-tokens", "24",
            "--batch-size", "16", "--validation-size", "16", "--no-progress"]
    assert main(["train", "--checkpoint-dir", str(runs), "--steps", "2", "--export", str(weights), *tiny]) == 0
    assert (runs / "checkpoint.pt").is_file() and (weights / "model.safetensors").is_file()
    assert main(["train", "--checkpoint-dir", str(runs), "--steps", "3", "--export", str(tmp_path / "w3"), *tiny]) == 0
    assert "step" in capsys.readouterr().out
    specimen = polycrystal(("Cu", "Cu2O"), scan_shape=(4, 3), n_grains=2, pattern_size=64, k_step=0.04, seed=1)
    cube = save(specimen.intensity, tmp_path / "cube.zarr")
    out = tmp_path / "orientation.nc"
    assert main(["orient", str(cube), "-o", str(out), "--weights", str(weights), "--no-progress"]) == 0
    result = load(out)
    assert result["quaternion"].shape == (4, 3, 4) and "confidence" in result
    assert main(["orient", str(cube), "-o", str(out), "--weights", str(weights), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
