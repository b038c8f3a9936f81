"""OrientationMapper: the estimator shape, numpy and dask inputs, and weights that round-trip and are checked."""

import numpy as np
import pytest
import xarray as xr

from stemkit.orientation import NotFittedError, OrientationMapper, WeightsError
from stemkit.physics.specimens import polycrystal
from stemkit.preprocess import find_peaks

TINY = dict(d_model=16, n_heads=2, n_layers=1, feedforward=32, max_tokens=24)


@pytest.fixture(scope="module")
def mapper():
    return OrientationMapper(("Cu", "Cu2O"), **TINY).fit(steps=2, batch_size=32, progress=False, validation_size=32)


@pytest.fixture(scope="module")
def specimen():
    return polycrystal(("Cu", "Cu2O"), scan_shape=(6, 5), n_grains=4, pattern_size=64, k_step=0.04, seed=3)


def test_predict_gives_maps_on_the_scan(mapper, specimen):
    result = mapper.predict(specimen.intensity, progress=False)
    assert result["quaternion"].dims == ("scan_y", "scan_x", "quat")
    assert result["quaternion"].shape == (6, 5, 4) and list(result["quat"].values) == ["w", "x", "y", "z"]
    np.testing.assert_array_equal(result["scan_x"].values, specimen["scan_x"].values)
    q = result["quaternion"].values.reshape(-1, 4)
    filled = result["n_peaks"].values.reshape(-1) > 0
    assert filled.any()
    np.testing.assert_allclose(np.linalg.norm(q[filled], axis=1), 1.0, atol=1e-6)
    assert set(np.unique(result["phase"].values[result["n_peaks"].values > 0])) <= {"Cu", "Cu2O"}
    assert result["ambiguous"].dtype == bool and result["alternative"].shape == (6, 5, 4)
    assert ((result["confidence"] >= 0) & (result["confidence"] <= 1)).all()
    assert "not calibrated" in result.attrs["confidence"]  # no confidence model fitted
    assert result.attrs["refined"]
    assert ((result["score"] >= 0) & (result["score"] <= 1)).all()


def test_neighbours_offers_can_be_turned_off_and_say_where_they_were_taken(mapper, specimen):
    alone = mapper.predict(specimen.intensity, progress=False, neighbours=False)
    assert alone["from_neighbour"].dtype == bool and not alone["from_neighbour"].any()
    offered = mapper.predict(specimen.intensity, progress=False)
    taken = offered["from_neighbour"].values
    assert taken.any()  # this tiny, barely trained model leaves lone wrong answers in the grains
    # where none was taken the answer is one of the pattern's own two (ties are ordered by the neighbours);
    # where one was, it scores higher than the pattern's own answer
    from stemkit.orientation.export import disorientation
    from stemkit.physics.presets import crystal

    kept = ~taken & (offered["phase"].values == alone["phase"].values) & (offered["n_peaks"].values > 0)
    for name in np.unique(offered["phase"].values[kept]):
        mine = kept & (offered["phase"].values == name)
        answer = offered["quaternion"].values[mine]
        closest = np.minimum(*(disorientation(answer, alone[own].values[mine], crystal(str(name)))
                               for own in ("quaternion", "alternative")))
        assert (closest < 1.0).all()
    assert (offered["score"].values[taken] > alone["score"].values[taken]).all()
    with pytest.raises(TypeError, match="neighbours must be True, False or a NeighbourSettings"):
        mapper.predict(specimen.intensity, progress=False, neighbours="yes")
    from stemkit.orientation import NeighbourSettings

    tuned = mapper.predict(specimen.intensity, progress=False, neighbours=NeighbourSettings(sweeps=0, twin_share=2.0,
                                                                                          break_ties=False))
    assert not tuned["from_neighbour"].any()  # no sweep: nothing offered
    xr.testing.assert_equal(tuned["quaternion"], alone["quaternion"])  # nor ties ordered, nor twins flagged


def test_numpy_dask_and_peak_inputs_agree(mapper, specimen):
    lazy = polycrystal(("Cu", "Cu2O"), scan_shape=(6, 5), n_grains=4, pattern_size=64, k_step=0.04, seed=3, lazy=True)
    assert lazy.intensity.chunks is not None
    eager = mapper.predict(specimen.intensity, progress=False)
    from_dask = mapper.predict(lazy.intensity, progress=False)
    from_peaks = mapper.predict(find_peaks(specimen.intensity), progress=False)
    from_dataset = mapper.predict(specimen, progress=False)
    for other in (from_dask, from_peaks, from_dataset):
        xr.testing.assert_equal(eager, other)


@pytest.mark.parametrize("chunks", [{"scan_y": 4}, {"scan_y": 1, "scan_x": 2}])
def test_a_lazy_prediction_equals_the_eager_one(mapper, specimen, chunks, monkeypatch):
    monkeypatch.setattr("stemkit.orientation.mapper.LAZY_BLOCK_PATTERNS", 1)  # keep these small chunks as blocks
    eager = mapper.predict(specimen.intensity, progress=False)
    lazy = mapper.predict(specimen.intensity.chunk(chunks), lazy=True)
    assert lazy["quaternion"].chunks is not None
    assert lazy.chunks["scan_y"] == specimen.intensity.chunk(chunks).chunks[0]
    from_numpy = mapper.predict(specimen.intensity, lazy=True)  # cut into blocks of one row by predict
    from_peaks = mapper.predict(find_peaks(specimen.intensity).chunk({"scan_y": 2}), lazy=True)
    for other in (lazy, from_numpy, from_peaks):
        # the model runs on smaller batches: float32 sums may differ in the last bits, nothing more
        computed = other.compute()
        xr.testing.assert_allclose(computed, eager, rtol=1e-4, atol=1e-5)
        for exact in ("phase", "ambiguous", "n_peaks"):
            xr.testing.assert_identical(computed[exact], eager[exact])
        assert computed.attrs == eager.attrs


def test_refinement_in_threads_gives_the_one_thread_answers(mapper, specimen, monkeypatch):
    """Refinement batches run in parallel Python threads; every batch is computed as with one thread."""
    import torch

    monkeypatch.setattr("stemkit.orientation.mapper.REFINE_BATCH", 7)  # 30 patterns: five batches
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = mapper.predict(specimen.intensity, progress=False)
        torch.set_num_threads(2)
        two = mapper.predict(specimen.intensity, progress=False)
        assert torch.get_num_threads() == 2  # the count is restored after the threads
    finally:
        torch.set_num_threads(threads)
    xr.testing.assert_identical(one, two)


def test_save_and_load_give_identical_predictions(mapper, specimen, tmp_path):
    before = mapper.predict(specimen.intensity, progress=False)
    mapper.save(tmp_path / "weights")
    assert {p.name for p in (tmp_path / "weights").iterdir()} == {"model.safetensors", "config.json"}
    loaded = OrientationMapper.load(tmp_path / "weights")
    assert loaded.weights_sha256_ == mapper.weights_sha256_ and len(loaded.weights_sha256_) == 64
    after = loaded.predict(specimen.intensity, progress=False)
    xr.testing.assert_equal(before.drop_attrs(), after.drop_attrs())
    assert after.attrs["model_sha256"] == mapper.weights_sha256_


def test_a_corrupted_weights_file_is_refused(mapper, tmp_path):
    folder = mapper.save(tmp_path / "weights")
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="model.safetensors.*SHA-256") as error:
        OrientationMapper.load(folder)
    assert "expected" in str(error.value) and "got" in str(error.value)


def test_a_pattern_without_disks_gets_no_answer(mapper, specimen):
    peaks = find_peaks(specimen.intensity)
    peaks["valid"][0, 0] = False
    result = mapper.predict(peaks, progress=False)
    assert result["phase"].values[0, 0] == "" and np.isnan(result["quaternion"].values[0, 0]).all()
    assert result["confidence"].values[0, 0] == 0 and not result["ambiguous"].values[0, 0]


def test_unfitted_and_wrong_inputs_say_what_to_do(mapper):
    with pytest.raises(NotFittedError, match="fit"):
        OrientationMapper().predict(xr.Dataset())
    with pytest.raises(TypeError, match="4D DataArray"):
        mapper.predict(np.zeros((2, 2, 8, 8)))
    with pytest.raises(FileNotFoundError, match="no pretrained weights"):
        OrientationMapper.pretrained("no-such-model")


def test_the_training_command_resumes_and_exports_weights_that_load(tmp_path, specimen):
    from stemkit.orientation.evaluation import load_mapper, on_validation_set
    from stemkit.orientation.train import main

    options = ["--checkpoint-dir", str(tmp_path / "run"), "--no-progress", "--d-model", "16", "--n-heads", "2",
               "--n-layers", "1", "--feedforward", "32", "--max-tokens", "24", "--batch-size", "32",
               "--validation-size", "32", "--checkpoint-every", "1"]
    assert main(["--steps", "1", *options]) == 0
    assert main(["--steps", "2", *options]) == 0  # resumes at step 1
    from_checkpoint = load_mapper(tmp_path / "run")
    exported = load_mapper(tmp_path / "run" / "final")
    assert from_checkpoint.training_record_["steps"] == 2 and exported.training_record_["steps"] == 2
    xr.testing.assert_equal(from_checkpoint.predict(specimen, progress=False).drop_attrs(),
                            exported.predict(specimen, progress=False).drop_attrs())
    assert set(on_validation_set(exported, size=32)) >= {"median_deg", "within_5deg", "phase_accuracy"}


def test_ipf_colours_follow_the_quaternions(mapper, specimen):
    from stemkit.orientation.ipf import ipf_colors

    result = mapper.predict(specimen.intensity, progress=False)
    assert result["ipf_rgb"].dims == ("scan_y", "scan_x", "rgb")
    q = result["quaternion"].values.reshape(-1, 4)
    rgb = result["ipf_rgb"].values.reshape(-1, 3)
    phases = result["phase"].values.reshape(-1)
    for name in ("Cu", "Cu2O"):
        rows = phases == name
        if rows.any():
            np.testing.assert_allclose(rgb[rows], ipf_colors(q[rows], "m-3m"), atol=1e-6)
    answered = result["n_peaks"].values.reshape(-1) > 0
    assert ((rgb[answered] >= 0) & (rgb[answered] <= 1)).all()


def test_the_disk_field_is_the_detector_less_a_probe_radius_in_each_patterns_frame(specimen):
    from stemkit.orientation.mapper import disk_field

    peaks = find_peaks(specimen.intensity)
    kx, ky = specimen.intensity["kx"].values, specimen.intensity["ky"].values
    assert peaks.attrs["k_extent"] == [kx.min(), kx.max(), ky.min(), ky.max()]
    field = disk_field(peaks)
    radius = peaks.attrs["probe_radius"]
    beam_kx, beam_ky = peaks["beam_kx"].values.reshape(-1), peaks["beam_ky"].values.reshape(-1)
    np.testing.assert_allclose(field[:, 0], kx.min() + radius - beam_kx, atol=1e-6)
    np.testing.assert_allclose(field[:, 3], ky.max() - radius - beam_ky, atol=1e-6)
    found = peaks["valid"].values.reshape(len(field), -1)
    px, py = (peaks[v].values.reshape(len(field), -1) for v in ("kx", "ky"))
    tolerance = 1e-6
    inside = ((px >= field[:, :1] - tolerance) & (px <= field[:, 1:2] + tolerance)
              & (py >= field[:, 2:3] - tolerance) & (py <= field[:, 3:] + tolerance))
    assert inside[found].all()  # every disk found lies in the field
    assert disk_field(peaks.drop_attrs()) is None  # peaks from elsewhere: no field, the reach alone
