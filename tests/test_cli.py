import numpy as np
import pytest
import xarray as xr

from stemkit import cli
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
    alone = tmp_path / "alone.nc"
    assert main(["orient", str(cube), "-o", str(alone), "--weights", str(weights), "--no-progress", "--no-neighbours"]) == 0
    assert not load(alone)["from_neighbour"].values.any()


def test_orient_writes_zarr_block_by_block_and_resumes_an_interrupted_run(tmp_path, capsys, monkeypatch):
    """A .zarr result is written a block of scan rows at a time; stopped after one block, the same
    command finishes the rest and the result equals an uninterrupted prediction."""
    from stemkit import OrientationMapper, load, save
    from stemkit.io.resumable import unfinished_blocks
    from stemkit.physics.specimens import polycrystal

    specimen = polycrystal(("Cu", "Cu2O"), scan_shape=(6, 3), n_grains=2, pattern_size=64, k_step=0.04, seed=1)
    cube = save(specimen.intensity.chunk({"scan_y": 2}), tmp_path / "cube.zarr")
    out = tmp_path / "orientation.zarr"
    monkeypatch.setattr("stemkit.orientation.mapper.LAZY_BLOCK_PATTERNS", 3)  # blocks of one row at least
    real = cli.save_by_chunks

    def stopped_after_one_block(*args, on_block, **kwargs):
        def stop(done, total):
            on_block(done, total)
            if done == 1:
                raise KeyboardInterrupt
        return real(*args, on_block=stop, **kwargs)

    monkeypatch.setattr(cli, "save_by_chunks", stopped_after_one_block)
    with pytest.raises(KeyboardInterrupt):
        main(["orient", str(cube), "-o", str(out), "--no-progress"])
    left = unfinished_blocks(out)
    assert 0 < len(left) < 6
    monkeypatch.setattr(cli, "save_by_chunks", real)
    assert main(["orient", str(cube), "-o", str(out), "--no-progress"]) == 0
    assert f"{len(left)} blocks of scan rows left" in capsys.readouterr().out
    assert unfinished_blocks(out) == []
    result = load(out)
    expected = OrientationMapper.pretrained("cu-cu2o").predict(load(cube), progress=False)
    xr.testing.assert_allclose(result.drop_attrs(), expected.drop_attrs(), rtol=1e-4, atol=1e-5)  # float32 batch noise
    assert result.attrs["input"] == str(cube.resolve())
    assert main(["orient", str(cube), "-o", str(out), "--no-progress"]) == 2  # complete: never replaced silently
    assert "--overwrite" in capsys.readouterr().err


def _saved(tmp_path, specimen, name="cube.zarr"):
    from stemkit import save

    return save(specimen.intensity, tmp_path / name)


def test_cluster_a_file_then_report(tmp_path, capsys):
    """`stemkit cluster` writes labels, tree and readings; `stemkit report` links them to the patterns."""
    from stemkit import load
    from stemkit.physics.specimens import deformed_flake

    cube = _saved(tmp_path, deformed_flake(scan_shape=(12, 12), pattern_size=64, k_step=0.05, seed=0))
    out = tmp_path / "clusters.nc"
    assert main(["cluster", str(cube), "-o", str(out), "--no-progress"]) == 0
    result = load(out)
    assert result["labels"].shape == (12, 12) and "means" in result and result.attrs["input"] == str(cube.resolve())
    assert "leaf clusters" in capsys.readouterr().out
    manual = tmp_path / "manual.nc"
    assert main(["cluster", str(cube), "-o", str(manual), "--tree", "2", "--no-progress"]) == 0
    assert load(manual)["labels"].to_series().nunique() == 2
    page = tmp_path / "report.html"
    assert main(["report", str(out), str(manual), "-o", str(page)]) == 0
    assert page.stat().st_size > 0 and "wrote" in capsys.readouterr().out
    assert main(["report", str(out), "-o", str(page)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_cluster_rejects_a_bad_tree(tmp_path, capsys):
    from stemkit.physics.specimens import deformed_flake

    cube = _saved(tmp_path, deformed_flake(scan_shape=(4, 4), pattern_size=32, k_step=0.1, seed=0))
    assert main(["cluster", str(cube), "-o", str(tmp_path / "c.nc"), "--tree", "two"]) == 2
    err = capsys.readouterr().err
    assert "--tree" in err and "'2,3'" in err and "Traceback" not in err


def test_strain_a_file_with_both_methods(tmp_path, capsys):
    """`stemkit strain` maps a known uniform strain with the lattice fit, and runs the CC-ST-AE."""
    from stemkit import load
    from stemkit.physics.specimens import strained_film

    right = np.arange(6)[None, :].repeat(6, axis=0) >= 3
    cube = _saved(tmp_path, strained_film("WS2", (6, 6), exx=np.where(right, 0.02, 0.0), eyy=0.0, exy=0.0,
                                          rotation=0.0, pattern_size=64, k_step=0.05, dose=1e6, seed=0))
    out = tmp_path / "strain.nc"
    assert main(["strain", str(cube), "-o", str(out)]) == 0
    result = load(out)
    assert result.attrs["method"] == "stemkit.strain.LatticeFit" and "median exx" in capsys.readouterr().out
    exx = result["exx"].values
    assert abs(np.median(exx[right]) - np.median(exx[~right]) - 0.02) < 3e-3  # the known step, either reference
    ccstae = tmp_path / "ccstae.zarr"
    assert main(["strain", str(cube), "-o", str(ccstae), "--method", "ccstae", "--epochs", "1",
                 "--max-train-patterns", "16", "--no-progress"]) == 0
    assert load(ccstae).attrs["method"] == "stemkit.strain.CCSTAE"


def test_report_without_the_patterns_says_how_to_give_them(tmp_path, capsys):
    import xarray as xr

    from stemkit import save

    result = save(xr.Dataset({"a": (("scan_y", "scan_x"), np.zeros((2, 2)))}), tmp_path / "maps.nc")
    assert main(["report", str(result), "-o", str(tmp_path / "r.html")]) == 2
    assert "--data" in capsys.readouterr().err


def test_the_command_starts_without_torch():
    """`stemkit info`, `formats` and `--help` do not pay for importing torch; `stemkit train --help` works."""
    import subprocess
    import sys

    code = "import sys; from stemkit.cli import _parser; _parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"
    help_text = subprocess.run([sys.executable, "-m", "stemkit.cli", "train", "--help"], capture_output=True,
                               text=True)
    assert help_text.returncode == 0 and "stemkit train" in help_text.stdout and "--bloch-fraction" in help_text.stdout
