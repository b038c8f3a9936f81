"""``OrientationMapper``: orientation and phase maps from 4D-STEM data with the Bragg-disk transformer.

The estimator of DESIGN.md: hyper-parameters in the constructor, ``fit`` trains on data
simulated for the mapper's phases, ``predict`` maps a dataset, learned state ends in ``_``::

    mapper = OrientationMapper(phases=("Cu", "Cu2O")).fit(steps=40_000, checkpoint_dir=".runs/cu-cu2o")
    result = mapper.predict(data)          # Dataset on (scan_y, scan_x)
    mapper.save("my-weights")              # safetensors + JSON, hash-checked on load
    mapper = OrientationMapper.load("my-weights")

Between the model and the result, every hypothesis and its 180°-about-the-beam twin is
refined against the pattern's own peaks and scored (:mod:`stemkit.orientation.selection`);
the score decides the answer, the alternative and the ``ambiguous`` flag; on the map each
answer's tilt gets a last polish against its disks' amplitudes (:mod:`stemkit.orientation.tilt`), and an
answer whose bright disks lie in one zone is also flagged where its twin scores close behind
(:mod:`stemkit.orientation.zones`); a logistic
model fitted on simulated patterns (:mod:`stemkit.orientation.confidence`) turns the
evidence into ``confidence``, the probability that the answer is within 5° of the truth.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from stemkit.data.blocks import in_row_blocks, map_row_blocks, shared
from stemkit.data.contract import SCAN_DIMS
from stemkit.physics.crystal import Crystal
from stemkit.physics.rotations import matrix_to_quaternion, reduce_to_fundamental_zone
from stemkit.orientation.decode import AMBIGUITY_ANGLE_DEG, AMBIGUITY_WEIGHT, Decoded
from stemkit.orientation.indexing import PairLibrary
from stemkit.orientation.inference import run_model
from stemkit.orientation.loss import SymmetryTable
from stemkit.orientation.confidence import ConfidenceModel
from stemkit.orientation.ipf import ipf_colors
from stemkit.orientation.model import ModelConfig, OrientationTransformer
from stemkit.orientation.neighbours import NeighbourSettings, PeaksOf, neighbour_support, offer_neighbours
from stemkit.orientation.refine import ReflectionTable
from stemkit.orientation.selection import Evidence, select, strongest_peaks
from stemkit.orientation.tilt import polish_tilt
from stemkit.orientation.simulate import Augmentation, as_crystals
from stemkit.orientation.tokens import FEATURES, tokens_from_arrays
from stemkit.orientation.weights import WeightsRecord, read_weights, write_weights
from stemkit.orientation.zones import flag_zone_twins, one_zone
from stemkit.preprocess.kernels import run_in_threads

PEAK_VARIABLES = ("kx", "ky", "intensity", "valid")
BLOCK_PATTERNS = 65_536  # patterns tokenised and run at a time (bounded memory)
REFINE_BATCH = 256  # patterns refined at a time (larger batches only cost memory: 1024 took 4x the memory, no faster)
LAZY_BLOCK_PATTERNS = 1024  # least patterns per block of a lazy predict (smaller input chunks are merged)
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


class NotFittedError(RuntimeError):
    """The mapper has no trained model yet."""


class OrientationMapper:
    """Orientation, phase and ambiguity maps from Bragg-disk tokens.

    Parameters
    ----------
    phases
        The crystals to tell apart: preset names (``"Cu"``) or :class:`~stemkit.physics.Crystal`.
    d_model, n_heads, n_layers, feedforward
        Transformer width, attention heads, layers and feed-forward width.
    n_hypotheses
        Rotation hypotheses per pattern (2: an answer and its alternative).
    max_tokens
        Most disks per pattern the model reads (the strongest are kept).
    augmentation
        Ranges of the simulated training data; default :class:`~stemkit.orientation.simulate.Augmentation`
        with ``max_tokens``.
    ambiguity_weight, ambiguity_angle
        A pattern is ``ambiguous`` when the alternative carries at least this weight and lies
        more than this many degrees from the answer (see :mod:`stemkit.orientation.decode`).

    Attributes
    ----------
    model_
        The trained :class:`~stemkit.orientation.model.OrientationTransformer`.
    crystals_
        The phases as crystals, in the model's phase order.
    history_
        Training log (losses, validation figures) of the last ``fit``.
    weights_sha256_
        SHA-256 of the weights file last saved or loaded (None before).
    """

    def __init__(
        self,
        phases: tuple[str | Crystal, ...] = ("Cu", "Cu2O"),
        *,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 3,
        feedforward: int = 128,
        n_hypotheses: int = 2,
        max_tokens: int = 48,
        augmentation: Augmentation | None = None,
        ambiguity_weight: float = AMBIGUITY_WEIGHT,
        ambiguity_angle: float = AMBIGUITY_ANGLE_DEG,
    ) -> None:
        self.phases = tuple(phases)
        self.d_model, self.n_heads, self.n_layers, self.feedforward = d_model, n_heads, n_layers, feedforward
        self.n_hypotheses, self.max_tokens = n_hypotheses, max_tokens
        self.augmentation = augmentation
        self.ambiguity_weight, self.ambiguity_angle = ambiguity_weight, ambiguity_angle
        self.weights_sha256_: str | None = None

    # ------------------------------------------------------------------ configuration
    def model_config(self) -> ModelConfig:
        """The model's hyper-parameters."""
        return ModelConfig(n_phases=len(self.phases), d_model=self.d_model, n_heads=self.n_heads,
                           n_layers=self.n_layers, feedforward=self.feedforward, n_hypotheses=self.n_hypotheses,
                           n_features=len(FEATURES))

    def training_augmentation(self) -> Augmentation:
        """The simulation ranges used by :meth:`fit`."""
        if self.augmentation is None:
            return Augmentation(max_tokens=self.max_tokens)
        if self.augmentation.max_tokens != self.max_tokens:
            raise ValueError(f"augmentation.max_tokens ({self.augmentation.max_tokens}) differs from max_tokens "
                             f"({self.max_tokens}); give the same number to both")
        return self.augmentation

    # ------------------------------------------------------------------ training
    def fit(
        self,
        *,
        steps: int = 40_000,
        batch_size: int = 512,
        device: str | torch.device = "cpu",
        checkpoint_dir: str | Path | None = None,
        seed: int = 0,
        progress: bool = True,
        verbose: bool = False,
        warm_start: bool = False,
        **training: Any,
    ) -> OrientationMapper:
        """Train on patterns simulated for :attr:`phases`; resume from ``checkpoint_dir`` when it holds a checkpoint.

        Parameters
        ----------
        steps
            Optimisation steps in all (a resumed run continues to this number).
        batch_size
            Simulated patterns per step.
        device
            Torch device.
        checkpoint_dir
            Where checkpoints and the history go (e.g. ``.runs/my-crystals``); ``None``: none.
        seed
            Seeds the model's initialisation and every simulated batch.
        progress, verbose
            Progress bar; log lines when there is none.
        warm_start
            Start from this mapper's current weights (e.g. loaded with :meth:`load` or
            :meth:`pretrained`) instead of a fresh initialisation, with a new optimiser and
            schedule: fine-tuning, e.g. on other simulation ranges. A checkpoint in
            ``checkpoint_dir`` still takes precedence (resumption).
        **training
            Other :class:`~stemkit.orientation.train.TrainingConfig` fields (``learning_rate``,
            ``validate_every``, ...).
        """
        from stemkit.orientation.train import Trainer, TrainingConfig

        config = TrainingConfig(steps=steps, batch_size=batch_size, seed=seed, **training)
        crystals = as_crystals(self.phases)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = OrientationTransformer(self.model_config())
        started_from = None
        if warm_start:
            if getattr(self, "model_", None) is None:
                raise ValueError("warm_start=True needs weights to start from: load them first "
                                 "(OrientationMapper.load(path) or OrientationMapper.pretrained(name))")
            model.load_state_dict(self.model_.state_dict())
            started_from = self.weights_sha256_ or "weights in memory"
        trainer = Trainer(model, crystals, self.training_augmentation(), config, device=device,
                          checkpoint_dir=checkpoint_dir, progress=progress, verbose=verbose)
        trainer.run()
        self.model_, self.crystals_, self.history_ = trainer.model.cpu().eval(), crystals, trainer.history
        self._tables = self._libraries = self._symmetry = None  # the phases may have changed: rebuild on the next predict
        self.training_record_ = {"steps": trainer.step, "training_config": asdict(trainer.config),
                                 "last_validation": _last_validation(trainer.history)}
        if started_from is not None:
            self.training_record_["warm_start_from"] = started_from
        self.weights_sha256_ = None
        return self

    # ------------------------------------------------------------------ prediction
    def predict(
        self,
        data: xr.DataArray | xr.Dataset,
        *,
        batch_size: int | None = None,
        device: str | torch.device = "cpu",
        progress: bool = True,
        peak_options: dict[str, Any] | None = None,
        refine: bool = True,
        all_phases: bool = False,
        neighbours: bool | NeighbourSettings = True,
        lazy: bool = False,
    ) -> xr.Dataset:
        """Orientation and phase of every pattern.

        Parameters
        ----------
        data
            A canonical 4D DataArray (numpy or dask; its peaks are found with
            :func:`stemkit.find_peaks`, which streams over dask chunks), a Dataset holding one
            as ``intensity``, or a peak Dataset from :func:`stemkit.find_peaks`.
        batch_size
            Patterns per model call; default 256 on the CPU (small length-sorted batches carry
            little padding), 4096 on an accelerator.
        device
            Torch device for the peak finder and the model.
        progress
            Show a progress bar over blocks of patterns.
        peak_options
            Keyword arguments for :func:`stemkit.find_peaks` (``threshold``, ``probe``, ...).
        refine
            Refine every hypothesis and its twin against the pattern's peaks and choose by
            score (:mod:`stemkit.orientation.selection`); ``False`` returns the model's raw answer.
        all_phases
            With ``refine``, also try every hypothesis in every phase and let the score
            choose the phase (slower by the number of phases).
        neighbours
            With ``refine``, offer each doubtful pattern its scan neighbours' orientations and
            keep one only where it explains the pattern's own peaks better than its own
            candidates (:mod:`stemkit.orientation.neighbours`; a
            :class:`~stemkit.orientation.neighbours.NeighbourSettings` to tune it). ``False``:
            every pattern on its own (e.g. scattered, unrelated patterns laid out as a scan).
        lazy
            Return a dask-backed result, computed block of scan rows by block when asked (by
            ``.compute()``, or written to zarr as it goes with :func:`stemkit.io.save_by_chunks`),
            on whatever dask scheduler is active: threads, or the workers of a
            ``dask.distributed`` cluster, which each receive the model once. Blocks are the
            input's ``scan_y`` chunks, merged up to about 1,024 patterns where smaller (numpy
            input: blocks of about 1,024 patterns). The direct-beam
            reference and radius are measured from the whole input first, so the values equal
            those of ``lazy=False``. Blocks read a few rows beyond their edges for the
            neighbours' offers, so those too are as with ``lazy=False``.

        Returns
        -------
        xarray.Dataset
            On ``(scan_y, scan_x)``: ``quaternion`` (dim ``quat``, (w, x, y, z), crystal → lab,
            in the fundamental zone of the phase), ``phase`` (names; ``""`` where a pattern has
            no diffracted disk), ``confidence`` (probability that the answer is within 5°,
            calibrated on simulated patterns when the weights carry a confidence model,
            otherwise the model's hypothesis weight, as ``attrs["confidence"]`` says),
            ``ambiguous`` (the alternative explains the pattern as well and differs by more
            than ``ambiguity_angle``, or it is the answer's 180°-about-the-beam twin, scores at
            least 0.7 of the answer and the answer's bright disks lie in one zone, where the twin
            excites them as the answer does: :mod:`stemkit.orientation.zones`), ``alternative`` (quaternion of the best other
            orientation), ``score`` (share of the pattern the answer explains, 0-1),
            ``phase_probability``, ``ipf_rgb`` (dim ``rgb``: IPF-Z colours, TSL key),
            ``n_peaks`` (diffracted disks read, the direct beam excluded) and ``from_neighbour``
            (the answer is a neighbour's orientation refined against this pattern).
        """
        self._check_fitted()
        neighbour_settings = _neighbour_settings(neighbours)
        if lazy:
            return self._lazy_predict(data, batch_size=batch_size, device=device, peak_options=peak_options or {},
                                      refine=refine, all_phases=all_phases, neighbours=neighbours,
                                      halo=_halo(refine, neighbour_settings))
        peaks = self._peaks_of(data, device, peak_options or {})
        answers = self._answers(peaks, batch_size=batch_size, device=device, progress=progress, refine=refine,
                                all_phases=all_phases)
        if refine:
            flat = [peaks[v].values.reshape(-1, peaks.sizes["peak"]) for v in PEAK_VARIABLES]
            answers = self.answers_on_the_map(*flat, answers, scan_shape=tuple(peaks.sizes[d] for d in SCAN_DIMS),
                                              beam_energy_kev=float(peaks.attrs["beam_energy_kev"]),
                                              beam_radius=float(peaks.attrs["probe_radius"]),
                                              neighbours=neighbour_settings, field=disk_field(peaks))
        return self._result(peaks, answers)

    def _check_fitted(self) -> None:
        if getattr(self, "model_", None) is None:
            raise NotFittedError("this OrientationMapper has no model yet: call fit(...), or use "
                                 "OrientationMapper.load(path) / OrientationMapper.pretrained(name)")

    def _lazy_predict(self, data: xr.DataArray | xr.Dataset, *, peak_options: dict[str, Any], halo: int,
                      **settings: Any) -> xr.Dataset:
        """:meth:`predict` as a dask-backed result, block of scan rows by block (see ``lazy``).

        Each block is predicted with ``halo`` rows more on either side (the reach of the
        neighbours' offers), which are dropped from its answer.
        """
        source = _source_of(data)
        if isinstance(source, xr.DataArray):
            peak_options = _whole_scan_peak_options(source, peak_options)
        blocks = in_row_blocks(source, LAZY_BLOCK_PATTERNS)
        return map_row_blocks(_predict_block, blocks, shared(self), shared({"peak_options": peak_options, **settings}),
                              name="orientation", halo=halo)

    @staticmethod
    def _peaks_of(data: xr.DataArray | xr.Dataset, device, options: dict[str, Any]) -> xr.Dataset:
        """The peak Dataset of the input (found here unless given)."""
        source = _source_of(data)
        if isinstance(source, xr.Dataset):
            return source
        from stemkit.preprocess import find_peaks

        return find_peaks(source, device=device, **options)

    def _answers(self, peaks: xr.Dataset, *, batch_size: int | None, device, progress: bool, refine: bool = True,
                 all_phases: bool = False) -> dict[str, np.ndarray]:
        """Answers for every pattern, flat over the scan, in blocks of bounded memory."""
        if "beam_energy_kev" not in peaks.attrs or "probe_radius" not in peaks.attrs:
            raise ValueError("the peak Dataset lacks attrs beam_energy_kev and probe_radius: use the output of "
                             "stemkit.find_peaks")
        flat = {v: peaks[v].values.reshape(-1, peaks.sizes["peak"]) for v in PEAK_VARIABLES}
        n = flat["kx"].shape[0]
        energy, radius = float(peaks.attrs["beam_energy_kev"]), float(peaks.attrs["probe_radius"])
        parts = []
        for start in tqdm(range(0, n, BLOCK_PATTERNS), disable=not progress, desc="orientation", unit="block"):
            block = {v: a[start:start + BLOCK_PATTERNS] for v, a in flat.items()}
            parts.append(self.answer_arrays(block["kx"], block["ky"], block["intensity"], block["valid"],
                                            beam_energy_kev=energy, beam_radius=radius, batch_size=batch_size,
                                            device=device, refine=refine, all_phases=all_phases))
        self.model_.cpu()
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def answer_arrays(self, kx: np.ndarray, ky: np.ndarray, intensity: np.ndarray, valid: np.ndarray, *,
                      beam_energy_kev: float, beam_radius: float | np.ndarray, batch_size: int | None = None,
                      device: str | torch.device = "cpu", refine: bool = True,
                      all_phases: bool = False) -> dict[str, np.ndarray]:
        """Answers for padded peak arrays ``(n, P)`` (1/Å from the direct beam), as flat arrays.

        The engine of :meth:`predict`, also used to calibrate the confidence on simulated peaks.
        """
        self._check_fitted()
        table = self._symmetry_table()
        features, mask = tokens_from_arrays(kx, ky, intensity, valid, beam_energy_kev=beam_energy_kev,
                                            beam_radius=beam_radius, max_tokens=self.max_tokens)
        decoded = run_model(self.model_, features, mask, table, batch_size=batch_size, device=device,
                            ambiguity_weight=self.ambiguity_weight, ambiguity_angle=self.ambiguity_angle)
        evidence = None
        if refine:
            tables, libraries = self._reflection_tables(), self._pair_libraries()  # built before any thread starts

            def refine_part(part: slice) -> tuple[Decoded, Evidence]:
                sub = Decoded(**{name: getattr(decoded, name)[part] for name in Decoded.__dataclass_fields__})
                radius = beam_radius[part] if np.ndim(beam_radius) else beam_radius
                peaks = strongest_peaks(kx[part], ky[part], intensity[part], valid[part], radius)
                return select(sub, peaks, tables, table, beam_energy_kev=beam_energy_kev, all_phases=all_phases,
                              ambiguity_angle=self.ambiguity_angle, libraries=libraries)

            parts = [slice(start, start + REFINE_BATCH) for start in range(0, len(mask), REFINE_BATCH)]
            chosen = run_in_threads(refine_part, parts)  # batches in parallel threads, answers as with one
            decoded = Decoded(**{name: np.concatenate([getattr(d, name) for d, _ in chosen])
                                 for name in Decoded.__dataclass_fields__})
            evidence = Evidence(**{name: np.concatenate([getattr(e, name) for _, e in chosen])
                                   for name in Evidence.__dataclass_fields__})
        n_peaks = mask.sum(axis=1)
        answers = {name: getattr(decoded, name) for name in Decoded.__dataclass_fields__} | {"n_peaks": n_peaks}
        answers["score"] = evidence.score if evidence is not None else np.full(len(mask), np.nan)
        if evidence is not None:
            answers |= {"evidence_" + name: value for name, value in vars(evidence).items()}
        model = getattr(self, "confidence_model_", None)
        if evidence is not None and model is not None:
            answers["confidence"] = model.probability(evidence, decoded, n_peaks)
        return answers

    def answers_on_the_map(self, kx: np.ndarray, ky: np.ndarray, intensity: np.ndarray, valid: np.ndarray,
                           answers: dict[str, np.ndarray], *, scan_shape: tuple[int, int], beam_energy_kev: float,
                           beam_radius: float, neighbours: NeighbourSettings | None = NeighbourSettings(),
                           field: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Refined ``answers`` of a whole scan (from :meth:`answer_arrays`, flat in row-major order) after
        the neighbours' offers (:mod:`stemkit.orientation.neighbours`; None: none), each answer's tilt polished
        against its disks' amplitudes (:mod:`stemkit.orientation.tilt`), one-zone answers with their twin close
        behind flagged ambiguous (:mod:`stemkit.orientation.zones`), with the confidence re-assessed with
        the map's evidence: how many neighbours share each answer.

        ``field`` ``(n, 4)``: where each pattern's disks could be found (:func:`disk_field`); None: anywhere
        within the reach of its peaks. The map step of :meth:`predict`, also used to calibrate the confidence on
        simulated scans.
        """
        symmetry = self._symmetry_table()
        decoded = Decoded(**{name: answers[name] for name in Decoded.__dataclass_fields__})
        evidence = Evidence(**{name: answers["evidence_" + name] for name in Evidence.__dataclass_fields__})
        adopted = np.zeros(len(evidence.score), bool)

        def peaks_of(index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return strongest_peaks(kx[index], ky[index], intensity[index], valid[index], beam_radius)

        if neighbours is not None:
            decoded, evidence, adopted = offer_neighbours(
                decoded, evidence, scan_shape, peaks_of, self._reflection_tables(), symmetry,
                beam_energy_kev=beam_energy_kev, settings=neighbours, ambiguity_angle=self.ambiguity_angle)
        decoded = self._polish_tilts(decoded, peaks_of, beam_energy_kev=beam_energy_kev, beam_radius=beam_radius,
                                     field=field)
        decoded = flag_zone_twins(decoded, evidence, self._one_zone(decoded, peaks_of, beam_energy_kev), symmetry)
        support = neighbour_support(decoded, evidence.score > 0, scan_shape, symmetry, self.ambiguity_angle)
        answers = answers | vars(decoded) | {"evidence_" + name: value for name, value in vars(evidence).items()}
        answers |= {"score": evidence.score, "from_neighbour": adopted, "neighbour_support": support}
        model = getattr(self, "confidence_model_", None)
        if model is not None:
            answers["confidence"] = model.probability(evidence, decoded, answers["n_peaks"], support)
        return answers

    def _polish_tilts(self, decoded: Decoded, peaks_of: PeaksOf, *, beam_energy_kev: float, beam_radius: float,
                      field: np.ndarray | None) -> Decoded:
        """``decoded`` with each answer's tilt polished against its disks' amplitudes (:mod:`stemkit.orientation.tilt`);
        ``peaks_of(index)`` gives the strongest peaks of the patterns at flat indices ``index``, ``field`` where
        their disks could be found."""
        tables = self._reflection_tables()
        parts = []
        for index in range(len(tables)):
            members = np.flatnonzero(decoded.phase == index)
            parts += [(index, members[start:start + REFINE_BATCH]) for start in range(0, len(members), REFINE_BATCH)]

        def polish(part: tuple[int, np.ndarray]) -> torch.Tensor:
            index, members = part
            start = torch.as_tensor(decoded.rotation[members], dtype=torch.float32)
            return polish_tilt(*peaks_of(members), start, tables[index], beam_energy_kev=beam_energy_kev,
                               beam_radius=beam_radius, field=None if field is None else torch.as_tensor(field[members]))

        rotation = np.array(decoded.rotation, dtype=np.float64)
        for (_, members), polished in zip(parts, run_in_threads(polish, parts)):
            rotation[members] = polished.double().numpy()
        return replace(decoded, rotation=rotation)

    def _one_zone(self, decoded: Decoded, peaks_of: PeaksOf, beam_energy_kev: float) -> np.ndarray:
        """``(n,)`` bool: each answer's disks near the Bragg condition lie in one zone (:func:`~stemkit.orientation.zones.one_zone`)."""
        tables = self._reflection_tables()
        parts = []
        for index in range(len(tables)):
            members = np.flatnonzero(decoded.phase == index)
            parts += [(index, members[start:start + REFINE_BATCH]) for start in range(0, len(members), REFINE_BATCH)]

        def test(part: tuple[int, np.ndarray]) -> torch.Tensor:
            index, members = part
            return one_zone(*peaks_of(members), torch.as_tensor(decoded.rotation[members], dtype=torch.float32),
                            tables[index], beam_energy_kev=beam_energy_kev)

        zone = np.zeros(len(decoded.phase), bool)
        for (_, members), found in zip(parts, run_in_threads(test, parts)):
            zone[members] = found.numpy()
        return zone

    def _symmetry_table(self) -> SymmetryTable:
        """The phases' point groups, in phase order (built once)."""
        if getattr(self, "_symmetry", None) is None:
            self._symmetry = SymmetryTable([c.point_group for c in self.crystals_])
        return self._symmetry

    def _reflection_tables(self) -> list[ReflectionTable]:
        """The phases' reflection tables (built once)."""
        if getattr(self, "_tables", None) is None:
            self._tables = [ReflectionTable.of(c) for c in self.crystals_]
        return self._tables

    def _pair_libraries(self) -> list[PairLibrary]:
        """The phases' reflection-pair libraries for peak-pair indexing (built once)."""
        if getattr(self, "_libraries", None) is None:
            self._libraries = [PairLibrary.of(table, crystal.point_group)
                               for table, crystal in zip(self._reflection_tables(), self.crystals_)]
        return self._libraries

    def _result(self, peaks: xr.Dataset, answers: dict[str, np.ndarray]) -> xr.Dataset:
        shape = tuple(peaks.sizes[d] for d in SCAN_DIMS)
        empty = answers["n_peaks"] == 0
        phase = answers["phase"]
        quaternion = self._in_fundamental_zone(answers["rotation"], phase)
        alternative = self._in_fundamental_zone(answers["alternative"], phase)
        quaternion[empty], alternative[empty] = np.nan, np.nan
        names = np.array([c.name for c in self.crystals_] + [""])[np.where(empty, len(self.crystals_), phase)]
        confidence = np.where(empty, 0.0, answers["confidence"]).astype(np.float32)
        ipf = np.full((len(phase), 3), np.nan)
        for index, xtal in enumerate(self.crystals_):
            members = np.flatnonzero((phase == index) & ~empty)
            if members.size:
                ipf[members] = ipf_colors(quaternion[members], xtal.point_group)
        grid = lambda a: a.reshape(*shape, *a.shape[1:])  # noqa: E731
        quat_dims = (*SCAN_DIMS, "quat")
        return xr.Dataset(
            {
                "quaternion": (quat_dims, grid(quaternion), {"convention": "(w, x, y, z), crystal → lab"}),
                "ipf_rgb": ((*SCAN_DIMS, "rgb"), grid(ipf.astype(np.float32)),
                            {"long_name": "IPF-Z colour (TSL key) of the beam direction in the crystal; NaN: no answer"}),
                "phase": (SCAN_DIMS, grid(names)),
                "confidence": (SCAN_DIMS, grid(confidence),
                               {"long_name": self._confidence_meaning(answers)}),
                "ambiguous": (SCAN_DIMS, grid(answers["ambiguous"] & ~empty)),
                "alternative": (quat_dims, grid(alternative), {"long_name": "the other rotation hypothesis"}),
                "phase_probability": (SCAN_DIMS, grid(np.where(empty, 0.0, answers["phase_probability"]))),
                "score": (SCAN_DIMS, grid(np.where(empty, 0.0, answers["score"]).astype(np.float32)),
                          {"long_name": "share of the pattern the refined answer explains (NaN: not refined)"}),
                "n_peaks": (SCAN_DIMS, grid(answers["n_peaks"].astype(np.int32)),
                            {"long_name": "diffracted disks read (direct beam excluded)"}),
                "from_neighbour": (SCAN_DIMS, grid(answers.get("from_neighbour", np.zeros(len(phase), bool)) & ~empty),
                                   {"long_name": "the answer is a scan neighbour's orientation, refined against this "
                                                 "pattern, which explains its peaks better than its own candidates"}),
            },
            coords={**{d: peaks[d] for d in SCAN_DIMS if d in peaks.coords}, "quat": ["w", "x", "y", "z"],
                    "rgb": ["r", "g", "b"]},
            attrs={"method": "stemkit.OrientationMapper", "model_sha256": self.weights_sha256_ or "unsaved",
                   "phases": [c.name for c in self.crystals_], "ambiguity_weight": self.ambiguity_weight,
                   "ambiguity_angle_deg": self.ambiguity_angle, "confidence": self._confidence_meaning(answers),
                   "refined": bool(np.isfinite(answers["score"]).any()),
                   "peaks": str(peaks.attrs.get("method", "given"))},
        )

    def _confidence_meaning(self, answers: dict[str, np.ndarray]) -> str:
        if getattr(self, "confidence_model_", None) is not None and np.isfinite(answers["score"]).any():
            return "probability that the answer is within 5° (calibrated on simulated patterns)"
        return "weight of the model's hypothesis (not calibrated)"

    def _in_fundamental_zone(self, rotations: np.ndarray, phase: np.ndarray) -> np.ndarray:
        """Quaternions of rotations, each reduced to its phase's fundamental zone."""
        quaternions = matrix_to_quaternion(rotations)
        for index, xtal in enumerate(self.crystals_):
            members = np.flatnonzero(phase == index)
            if members.size:
                quaternions[members] = reduce_to_fundamental_zone(quaternions[members], xtal.point_group)
        return quaternions

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the weights (safetensors) and ``config.json`` to the folder ``path``; return it."""
        self._check_fitted()
        record = WeightsRecord(model=self.model_.config, phases=list(self.crystals_),
                               settings=self._settings(), training=getattr(self, "training_record_", {}))
        self.weights_sha256_ = write_weights(path, self.model_, record)
        return Path(path)

    def _settings(self) -> dict[str, Any]:
        settings = {"max_tokens": self.max_tokens, "ambiguity_weight": self.ambiguity_weight,
                    "ambiguity_angle": self.ambiguity_angle, "augmentation": self.training_augmentation().to_dict()}
        if getattr(self, "confidence_model_", None) is not None:
            settings["confidence"] = self.confidence_model_.to_dict()
        return settings

    @classmethod
    def load(cls, path: str | Path) -> OrientationMapper:
        """A mapper from a folder written by :meth:`save`; the weights' SHA-256 is checked, nothing is unpickled."""
        model, record = read_weights(path)
        settings, config = record.settings, record.model
        augmentation = settings.get("augmentation")
        mapper = cls(phases=tuple(record.phases), d_model=config.d_model, n_heads=config.n_heads,
                     n_layers=config.n_layers, feedforward=config.feedforward, n_hypotheses=config.n_hypotheses,
                     max_tokens=int(settings.get("max_tokens", 48)),
                     augmentation=None if augmentation is None else Augmentation.from_dict(augmentation),
                     ambiguity_weight=float(settings.get("ambiguity_weight", AMBIGUITY_WEIGHT)),
                     ambiguity_angle=float(settings.get("ambiguity_angle", AMBIGUITY_ANGLE_DEG)))
        mapper.model_, mapper.crystals_, mapper.history_ = model, list(record.phases), []
        mapper.training_record_, mapper.weights_sha256_ = record.training, record.sha256
        if "confidence" in settings:
            mapper.confidence_model_ = ConfidenceModel.from_dict(settings["confidence"])
        return mapper

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> OrientationMapper:
        """A mapper with the model of a training checkpoint (``checkpoint.pt`` or its folder), e.g. to evaluate a run.

        The checkpoint is read with ``torch.load(weights_only=True)``: tensors and plain values, never code.
        """
        from stemkit.orientation.train import CHECKPOINT_FILE
        from stemkit.orientation.weights import crystal_from_dict

        path = Path(path)
        path = path / CHECKPOINT_FILE if path.is_dir() else path
        state = torch.load(path, map_location="cpu", weights_only=True)
        config = ModelConfig(**state["model_config"])
        augmentation = Augmentation.from_dict(state["augmentation"])
        crystals = [crystal_from_dict(p) for p in state["phases"]]
        mapper = cls(phases=tuple(crystals), d_model=config.d_model, n_heads=config.n_heads, n_layers=config.n_layers,
                     feedforward=config.feedforward, n_hypotheses=config.n_hypotheses,
                     max_tokens=augmentation.max_tokens, augmentation=augmentation)
        model = OrientationTransformer(config)
        model.load_state_dict(state["model"])
        mapper.model_, mapper.crystals_, mapper.history_ = model.eval(), crystals, list(state["history"])
        mapper.training_record_ = {"steps": int(state["step"]), "training_config": state["training_config"],
                                   "last_validation": _last_validation(mapper.history_)}
        return mapper

    @classmethod
    def pretrained(cls, name: str) -> OrientationMapper:
        """Weights shipped with stemkit (``stemkit/pretrained/<name>/``)."""
        folder = PRETRAINED_DIR / name
        if not folder.is_dir():
            shipped = sorted(p.name for p in PRETRAINED_DIR.iterdir() if p.is_dir()) if PRETRAINED_DIR.is_dir() else []
            raise FileNotFoundError(f"no pretrained weights named {name!r} in {PRETRAINED_DIR} (shipped: "
                                    f"{shipped or 'none yet'}); train your own with OrientationMapper.fit or "
                                    f"`python -m stemkit.orientation.train`")
        return cls.load(folder)

    def __repr__(self) -> str:
        names = [p if isinstance(p, str) else p.name for p in self.phases]
        state = "fitted" if getattr(self, "model_", None) is not None else "not fitted"
        return (f"OrientationMapper(phases={tuple(names)}, d_model={self.d_model}, n_layers={self.n_layers}, "
                f"n_hypotheses={self.n_hypotheses}, {state})")


def _source_of(data: xr.DataArray | xr.Dataset) -> xr.DataArray | xr.Dataset:
    """The 4D cube or the peak Dataset that :meth:`OrientationMapper.predict` reads from ``data``."""
    if isinstance(data, xr.Dataset) and all(v in data for v in PEAK_VARIABLES):
        return data
    if isinstance(data, xr.Dataset) and "intensity" in data and data["intensity"].ndim == 4:
        data = data["intensity"]
    if not isinstance(data, xr.DataArray) or data.ndim != 4:
        raise TypeError(f"predict needs a 4D DataArray (scan_y, scan_x, ky, kx), a Dataset holding one as "
                        f"'intensity', or a peak Dataset from stemkit.find_peaks; got {type(data).__name__}")
    return data


def _whole_scan_peak_options(data: xr.DataArray, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the probe image and radius that :func:`stemkit.find_peaks` would measure from
    the whole of ``data``, so that every block finds its peaks as the whole scan would."""
    from stemkit.preprocess.peaks import probe_reference

    probe, radius = probe_reference(data, options.get("probe"), options.get("radius"))
    return {**options, "probe": probe, "radius": radius}


def _halo(refine: bool, neighbours: NeighbourSettings | None) -> int:
    """Rows a lazy block reads beyond its edges: the reach of the neighbours' offers, or the 1 row of the
    neighbour support in the confidence; none without refinement."""
    if not refine:
        return 0
    return neighbours.reach if neighbours is not None else 1


def _neighbour_settings(neighbours: bool | NeighbourSettings) -> NeighbourSettings | None:
    """The settings of ``predict(neighbours=...)``: None for no offers."""
    if isinstance(neighbours, NeighbourSettings):
        return neighbours
    if isinstance(neighbours, (bool, np.bool_)):
        return NeighbourSettings() if neighbours else None
    raise TypeError(f"neighbours must be True, False or a NeighbourSettings; got {type(neighbours).__name__}")


def disk_field(peaks: xr.Dataset) -> np.ndarray | None:
    """``(n, 4)``: ``[kx_min, kx_max, ky_min, ky_max]`` (1/Å, each pattern's peak frame) within which a disk centre
    could be found, flat over the scan: the detector (``attrs["k_extent"]``, as :func:`~stemkit.find_peaks` records
    it) less a probe radius at each edge, shifted by the pattern's direct beam. None where the peaks do not say."""
    extent = peaks.attrs.get("k_extent")
    if extent is None or "probe_radius" not in peaks.attrs:
        return None
    n = peaks.sizes[SCAN_DIMS[0]] * peaks.sizes[SCAN_DIMS[1]]
    beam = [peaks[name].values.reshape(n) if name in peaks else np.zeros(n) for name in ("beam_kx", "beam_ky")]
    radius = float(peaks.attrs["probe_radius"])
    kx_min, kx_max, ky_min, ky_max = (float(v) for v in extent)
    return np.stack([kx_min + radius - beam[0], kx_max - radius - beam[0],
                     ky_min + radius - beam[1], ky_max - radius - beam[1]], axis=1).astype(np.float32)


def _predict_block(block: xr.DataArray | xr.Dataset, mapper: OrientationMapper, settings: dict[str, Any]) -> xr.Dataset:
    """One block of a lazy :meth:`OrientationMapper.predict` (runs on a dask worker)."""
    return mapper.predict(block, progress=False, **settings)


def _last_validation(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    for record in reversed(history):
        if "validation" in record:
            return {"step": record["step"], **record["validation"]}
    return None
