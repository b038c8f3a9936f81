"""CCSTAE: unsupervised strain and rotation maps by a cycle-consistent spatial-transformer autoencoder.

The science is that of Qin, Agar and Tran (2023): an encoder assigns each pattern to one
of a few learned base patterns and predicts a bounded affine warp; the pattern warped
into the base frame must match the base, and the base warped back must match the
pattern, inside an annular mask; strain and rotation come from the polar decomposition
of the warp relative to a reference region. What stemkit changes, so that nothing is
tuned by hand and a CPU suffices:

- **fit** trains on (a random sample of) the user's own patterns, prepared once
  (:mod:`stemkit.strain.patterns`: square root, background high-pass, matched blur,
  annular mask narrowed to the disks) — no upsampling; the loss starts blurred (a wide
  basin) and the bases start from k-means clusters. Early stopping on a held-out tenth.
  The base decoder is then polished in closed form: the warps of a sample of training
  patterns spread over the scan are refined (below) and each base becomes the mean of its
  patterns warped into its frame — the *sharp* patterns, without the matched blur (step 4
  of :func:`stemkit.strain.patterns.prepare`), so that the bases are templates of the
  unblurred data; the other bases are registered onto the dominant one, so all warps
  share one frame.
- **transform** runs the encoder (on blurred patterns, as in training) for the starting
  warp and base, then refines each warp by Gauss-Newton on the backward term of the same
  cycle loss (the fixed base, upsampled, warped onto the pattern), coarse to fine
  (:func:`stemkit.strain.warp.refine`): the network gives the basin, the smooth warp the
  sub-pixel precision. The last level compares the sharp pattern
  with the sharp base: the Poisson noise of a square-rooted pattern is nearly white, so
  the least-squares match of the unblurred pattern with a smooth template is the efficient
  one, while blurring the pattern as well (as before) weighted its noise twice — on the
  70 %-background film of ``benchmarks/strain`` the per-pattern scatter of exx fell from
  0.00120 to 0.00094 (the Cramér-Rao bound of that film is 0.00080).
  Patterns stream through in blocks (dask chunks stay lazy); with a
  ``dask.distributed`` client the blocks run on its workers, which receive the model once.
- **read-off**: ``F = (D A D⁻¹)⁻ᵀ`` (``D`` the pixel size), brought onto one symmetry
  branch of the base's own rotational symmetry, relative to the reference of
  :mod:`stemkit.strain.reference` (automatic: the dominant base's most uniform region).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from stemkit.data.blocks import in_row_blocks, map_row_blocks, on_a_cluster, shared
from stemkit.data.contract import SCAN_DIMS
from stemkit.data.validate import validate
from stemkit.strain.lattice_fit import NotFittedError
from stemkit.strain.loss import cycle_loss, regularisers
from stemkit.strain.model import CCSTAENet, straight_through
from stemkit.strain.patterns import (PatternGeometry, dataset_scale, gaussian_blur, matched_blur, prepare,
                                     structure_mask)
from stemkit.strain.polar import deformation_from_reciprocal
from stemkit.strain.reference import strain_dataset, strain_fields
from stemkit.strain.symmetry import pattern_symmetry_order
from stemkit.strain.warp import apply, mask_points, refine, sample

TRAIN_BLUR_PX = 2.0
GAUGE_WEIGHT = 1.0
BALANCE_WEIGHT = 0.01
POLISH_ROUNDS = 2
KMEANS_ITERATIONS = 10
BLOCK_PATTERNS = 256
POLISH_PATTERNS = 512


class CCSTAE:
    """Cycle-consistent spatial-transformer autoencoder for strain mapping (module docstring).

    Parameters
    ----------
    n_bases
        Size of the learned dictionary of base patterns.
    reference
        ``"auto"`` (the dominant base's most uniform region) or a boolean map of the scan.
    max_strain, max_rotation, max_shift_px
        Bounds of the affine head: scale/shear fraction, rotation (degrees), translation (px).
    epochs, batch_size, learning_rate, patience
        Training: at most ``epochs`` passes, stopped when the held-out loss has not improved
        for ``patience`` epochs (the best weights are kept).
    max_train_patterns
        Patterns sampled (without replacement, seeded) from the data to train on (all of a scan
        that has fewer). 2048 rather than 1024 brought the 70 %-background film of
        ``benchmarks/strain`` from exx MAE 0.00103 to 0.00096 for 1.7× the CPU time.
    refine_levels, refine_iterations
        Gaussian blur (px) of the sharp patterns and bases at each coarse-to-fine Gauss-Newton
        level (the last should be 0: the unblurred pattern against the smooth base), and steps
        per level.
    bin
        Detector binning; default: none for patterns up to 256 px.
    seed
        Seeds the sample, the initialisation and the batches.
    device
        Torch device (``"cuda"`` for a GPU).
    num_threads
        Torch CPU threads while fitting/transforming; default: torch's setting.
    progress
        Show tqdm progress bars.

    Attributes
    ----------
    model_
        The trained :class:`~stemkit.strain.model.CCSTAENet`; its bases are the polished sharp
        templates (trained on blurred patterns, then replaced by the warped means).
    geometry_
        The :class:`~stemkit.strain.patterns.PatternGeometry` of the data.
    mask_
        ``(S, S)`` mask of the loss and refinement.
    alignment_
        ``(n_bases, 2, 2)`` and ``(n_bases, 2)``: each base registered onto the dominant one.
    dominant_base_
        Index of the most used base.
    symmetry_order_
        Rotational order of the dominant base pattern (6 for a hexagonal zone axis).
    history_
        Per epoch: training and held-out loss.
    """

    def __init__(self, *, n_bases: int = 2, reference: Any = "auto", max_strain: float = 0.15,
                 max_rotation: float = 30.0, max_shift_px: float = 3.0, epochs: int = 10, batch_size: int = 32,
                 learning_rate: float = 2e-3, patience: int = 2, max_train_patterns: int = 2048,
                 refine_levels: tuple[float, ...] = (2.5, 1.25, 0.0), refine_iterations: int = 3,
                 bin: int | None = None, seed: int = 0, device: str = "cpu", num_threads: int | None = None,
                 progress: bool = True) -> None:
        self.n_bases = n_bases
        self.reference = reference
        self.max_strain = max_strain
        self.max_rotation = max_rotation
        self.max_shift_px = max_shift_px
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.max_train_patterns = max_train_patterns
        self.refine_levels = tuple(refine_levels)
        self.refine_iterations = refine_iterations
        self.bin = bin
        self.seed = seed
        self.device = device
        self.num_threads = num_threads
        self.progress = progress

    # -- fit ---------------------------------------------------------------------------
    def fit(self, data: xr.DataArray) -> "CCSTAE":
        """Train on a sample of the patterns of ``data`` (canonical 4D DataArray, numpy or dask)."""
        self._check_parameters()
        validate(data, check_values=False)
        with self._threads():
            rng = np.random.default_rng(self.seed)
            torch.manual_seed(self.seed)
            geometry = PatternGeometry.from_data(data, self.bin)
            sharp = self._training_images(data, geometry, rng)
            images = matched_blur(sharp, geometry)
            annulus = geometry.mask()
            self.geometry_ = geometry.with_scale(dataset_scale(images, annulus))
            images = images / self.geometry_.scale
            stride = max(1, len(sharp) // POLISH_PATTERNS)  # spread over the scan (the sample is sorted)
            sharp = sharp[::stride][:POLISH_PATTERNS] / self.geometry_.scale
            self.mask_ = structure_mask(images.mean(0).cpu().numpy(), annulus)
            model = CCSTAENet(geometry.size, self.n_bases, max_strain=self.max_strain,
                              max_rotation=self.max_rotation, max_shift_px=self.max_shift_px).to(self.device)
            with torch.no_grad():
                blurred = gaussian_blur(images, TRAIN_BLUR_PX)
                small = torch.cat([model.shrink(images[s:s + BLOCK_PATTERNS])
                                   for s in range(0, len(images), BLOCK_PATTERNS)])
                model.bases.copy_(_kmeans_bases(small, blurred, self.n_bases, rng))
            self.history_ = self._train(model, small, blurred, rng)
            self.model_ = model.eval()
            del images, small, blurred
            self._polish(sharp, annulus)
        return self

    def _check_parameters(self) -> None:
        if not (isinstance(self.n_bases, int) and self.n_bases >= 1):
            raise ValueError(f"n_bases must be a positive integer; got {self.n_bases!r}.")
        if self.max_train_patterns < 16:
            raise ValueError(f"max_train_patterns must be at least 16; got {self.max_train_patterns!r}.")

    def _training_images(self, data: xr.DataArray, geometry: PatternGeometry, rng) -> torch.Tensor:
        n_y, n_x = data.sizes["scan_y"], data.sizes["scan_x"]
        count = min(self.max_train_patterns, n_y * n_x)
        if count < 16:
            raise ValueError(f"the scan has {n_y * n_x} patterns; the CC-ST-AE needs at least 16 to learn from.")
        chosen = np.sort(rng.choice(n_y * n_x, size=count, replace=False))
        iy, ix = np.unravel_index(chosen, (n_y, n_x))
        picked = data.isel(scan_y=xr.DataArray(iy, dims="p"), scan_x=xr.DataArray(ix, dims="p"))
        blocks = [prepare(np.asarray(picked.data[s:s + BLOCK_PATTERNS]), geometry, self.device, blur=False)
                  for s in range(0, count, BLOCK_PATTERNS)]
        return torch.cat(blocks)

    def _train(self, model: CCSTAENet, small: torch.Tensor, images: torch.Tensor, rng) -> list[dict[str, float]]:
        points, flat = mask_points(self.mask_, self.device)
        order = rng.permutation(len(images))
        n_held = max(1, len(images) // 10)
        held, train = order[:n_held], order[n_held:]
        optimiser = torch.optim.Adam(model.parameters(), lr=self.learning_rate)
        best, best_state, waited, history = np.inf, copy.deepcopy(model.state_dict()), 0, []
        for epoch in tqdm(range(self.epochs), disable=not self.progress, desc="CC-ST-AE fit", unit="epoch"):
            model.train()
            losses = []
            for start in range(0, len(train), self.batch_size):
                batch = torch.as_tensor(train[start:start + self.batch_size])
                loss = self._batch_loss(model, small[batch], images[batch], points, flat)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                losses.append(float(loss.detach()))
            rng.shuffle(train)
            model.eval()
            with torch.no_grad():
                parts = [torch.as_tensor(held[s:s + BLOCK_PATTERNS]) for s in range(0, len(held), BLOCK_PATTERNS)]
                held_loss = float(np.mean([float(self._batch_loss(model, small[p], images[p], points, flat))
                                           for p in parts]))
            history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "held_out_loss": held_loss})
            if held_loss < best - 1e-4:
                best, best_state, waited = held_loss, copy.deepcopy(model.state_dict()), 0
            else:
                waited += 1
                if waited >= self.patience:
                    break
        model.load_state_dict(best_state)
        return history

    @staticmethod
    def _batch_loss(model: CCSTAENet, small: torch.Tensor, batch: torch.Tensor, points, flat) -> torch.Tensor:
        logits, matrix, shift = model(small)
        onehot = straight_through(logits)
        bases = torch.einsum("nk,khw->nhw", onehot, model.bases)
        gauge, balance = regularisers(matrix, shift, torch.softmax(logits, -1))
        return cycle_loss(batch, bases, matrix, shift, points, flat).mean() + GAUGE_WEIGHT * gauge \
            + BALANCE_WEIGHT * balance

    def _polish(self, sharp: torch.Tensor, annulus: np.ndarray) -> None:
        """Closed-form base decoder: refine the warps of sharp training patterns, average the warped
        patterns, repeat; the bases become sharp templates."""
        model = self.model_
        with torch.no_grad():
            labels, matrix, shift = self._encode(matched_blur(sharp, self.geometry_))
            for _ in range(POLISH_ROUNDS):
                matrix, shift, _ = self._refine(sharp, model.bases, labels, matrix, shift)
                model.bases.copy_(_warped_means(sharp, labels, matrix, shift, model.bases, annulus))
            counts = torch.bincount(labels, minlength=self.n_bases)
            self.dominant_base_ = int(counts.argmax())
            dominant = matched_blur(model.bases[self.dominant_base_][None], self.geometry_)[0].cpu().numpy()
            self.mask_ = structure_mask(dominant, annulus)
            self.symmetry_order_ = pattern_symmetry_order(dominant, annulus)
            self.alignment_ = self._align_bases(counts)

    def _align_bases(self, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each used base registered onto the dominant one: ``base_k(A_k v + t_k) ≈ base_d(v)``."""
        bases = self.model_.bases
        matrix = torch.eye(2, device=bases.device).repeat(self.n_bases, 1, 1)
        shift = torch.zeros(self.n_bases, 2, device=bases.device)
        others = [k for k in range(self.n_bases) if k != self.dominant_base_ and counts[k] > 0]
        if others:
            target = torch.full((len(others),), self.dominant_base_, device=bases.device)
            aligned, moved, _ = self._refine(bases[others], bases, target, matrix[others], shift[others])
            matrix[others], shift[others] = aligned, moved
        return matrix, shift

    def _encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = [self.model_(self.model_.shrink(images[s:s + BLOCK_PATTERNS]))
               for s in range(0, len(images), BLOCK_PATTERNS)]
        logits, matrix, shift = (torch.cat(parts) for parts in zip(*out))
        return logits.argmax(-1), matrix, shift

    def _refine(self, images, bases, labels, matrix, shift):
        return refine(images, bases, labels, self.mask_, matrix, shift, levels=self.refine_levels,
                      iterations=self.refine_iterations)

    # -- transform -------------------------------------------------------------------------
    def transform(self, data: xr.DataArray) -> xr.Dataset:
        """Strain and rotation of every pattern of ``data``.

        Returns
        -------
        xarray.Dataset
            On ``(scan_y, scan_x)``: ``exx``, ``eyy``, ``exy``, ``rotation`` (degrees, right-handed
            about the beam), ``base`` (index of the learned base), ``reference`` (the map whose
            median lattice is the reference) and ``residual`` (RMS of the cycle residual
            relative to the base).
        """
        if not hasattr(self, "model_"):
            raise NotFittedError("this CCSTAE is not fitted yet: call .fit(data) before .transform(data).")
        validate(data, check_values=False)
        geometry = PatternGeometry.from_data(data, self.geometry_.bin)
        if (geometry.size, geometry.bin) != (self.geometry_.size, self.geometry_.bin):
            raise ValueError(f"the patterns give {geometry.size} px images but the model was fitted on "
                             f"{self.geometry_.size} px ones; transform data of the same detector geometry.")
        geometry = geometry.with_scale(self.geometry_.scale)
        if on_a_cluster() and data.chunks:
            measured = map_row_blocks(_measure_block, in_row_blocks(data, BLOCK_PATTERNS), shared(self),
                                      shared(geometry), name="ccstae").compute()
            matrix, base, residual = (measured[n].values for n in ("matrix", "base", "residual"))
        else:
            matrix, base, residual = self._measure_rows(data, geometry)
        pixel = np.diag([geometry.k_step[1], geometry.k_step[0]])  # (x, y) pixel → (kx, ky)
        reciprocal = pixel @ matrix @ np.linalg.inv(pixel)
        deformation = deformation_from_reciprocal(reciprocal)
        fields, mask = strain_fields(deformation, base, self.reference, self.symmetry_order_)
        attrs = {"method": "stemkit.strain.CCSTAE", "n_bases": self.n_bases, "dominant_base": self.dominant_base_,
                 "symmetry_order": self.symmetry_order_, "seed": self.seed,
                 "reference_rule": "given map" if not isinstance(self.reference, str) else "auto",
                 "epochs_run": len(self.history_), "held_out_loss": self.history_[-1]["held_out_loss"],
                 "bin": geometry.bin, "refine_levels": list(self.refine_levels),
                 "refine_iterations": self.refine_iterations}
        extra = {"base": (SCAN_DIMS, base), "residual": (SCAN_DIMS, residual)}
        return strain_dataset(fields, mask, {d: data[d] for d in SCAN_DIMS}, attrs, extra)

    def fit_transform(self, data: xr.DataArray) -> xr.Dataset:
        """``fit(data)`` then ``transform(data)``."""
        return self.fit(data).transform(data)

    def _measure_rows(self, data: xr.DataArray, geometry: PatternGeometry,
                      progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Warp matrices ``(n_y, n_x, 2, 2)``, base labels and residuals of every pattern, streamed
        through this process in blocks of scan rows."""
        n_y, n_x = data.sizes["scan_y"], data.sizes["scan_x"]
        rows = _row_blocks(data, BLOCK_PATTERNS)
        matrices, labels, residuals = [], [], []
        with self._threads(), torch.no_grad():
            for start, stop in tqdm(rows, disable=not (self.progress and progress), desc="CC-ST-AE transform",
                                    unit="block"):
                images = prepare(np.asarray(data.data[start:stop]), geometry, self.device, blur=False)
                for s in range(0, len(images), BLOCK_PATTERNS):
                    m, label, r = self._measure(images[s:s + BLOCK_PATTERNS])
                    matrices.append(m), labels.append(label), residuals.append(r)
        matrix = torch.cat(matrices).double().cpu().numpy().reshape(n_y, n_x, 2, 2)
        base = torch.cat(labels).cpu().numpy().reshape(n_y, n_x)
        residual = torch.cat(residuals).cpu().numpy().reshape(n_y, n_x)
        return matrix, base, residual

    def _measure(self, sharp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Refined warps onto the dominant base's frame, base labels and residuals of a block of sharp
        patterns (``prepare(..., blur=False)``)."""
        labels, matrix, shift = self._encode(matched_blur(sharp, self.geometry_))
        matrix, shift, residual = self._refine(sharp, self.model_.bases, labels, matrix, shift)
        align_matrix, _ = self.alignment_
        return matrix @ align_matrix[labels], labels, residual

    @contextmanager
    def _threads(self):
        previous = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(int(self.num_threads))
        try:
            yield
        finally:
            torch.set_num_threads(previous)


def _measure_block(block: xr.DataArray, estimator: CCSTAE, geometry: PatternGeometry) -> xr.Dataset:
    """The measurements of one block of scan rows, as a Dataset (runs on a dask worker)."""
    matrix, base, residual = estimator._measure_rows(block, geometry, progress=False)
    return xr.Dataset({"matrix": ((*SCAN_DIMS, "i", "j"), matrix), "base": (SCAN_DIMS, base),
                       "residual": (SCAN_DIMS, residual)}, coords={d: block[d] for d in SCAN_DIMS})


def _row_blocks(data: xr.DataArray, patterns: int) -> list[tuple[int, int]]:
    """Scan-row ranges to stream, about ``patterns`` patterns each; on dask, whole row chunks merged
    until they hold that many (small batches waste most of the time in thread synchronisation)."""
    n_y, n_x = data.sizes["scan_y"], data.sizes["scan_x"]
    chunks = getattr(data.data, "chunks", None)
    edges = np.cumsum((0, *chunks[0])) if chunks is not None and not isinstance(data.data, np.ndarray) \
        else np.arange(n_y + 1)
    blocks, start = [], 0
    for edge in edges[1:]:
        if (edge - start) * n_x >= patterns or edge == n_y:
            blocks.append((int(start), int(edge)))
            start = edge
    return blocks


def _kmeans_bases(small: torch.Tensor, blurred: torch.Tensor, k: int, rng) -> torch.Tensor:
    """Initial bases: means of ``blurred`` over k-means clusters (k-means++ start) of the encoder inputs."""
    features = small.flatten(1)
    centres = [features[rng.integers(len(features))]]
    for _ in range(1, k):
        distance = torch.cdist(features, torch.stack(centres)).min(1).values.pow(2).double().cpu().numpy()
        centres.append(features[rng.choice(len(features), p=distance / distance.sum())])
    centres = torch.stack(centres)
    for _ in range(KMEANS_ITERATIONS):
        labels = torch.cdist(features, centres).argmin(1)
        centres = torch.stack([features[labels == j].mean(0) if (labels == j).any() else centres[j]
                               for j in range(k)])
    return torch.stack([blurred[labels == j].mean(0) if (labels == j).any() else blurred.mean(0)
                        for j in range(k)])


def _warped_means(images: torch.Tensor, labels: torch.Tensor, matrix: torch.Tensor, shift: torch.Tensor,
                  bases: torch.Tensor, annulus: np.ndarray) -> torch.Tensor:
    """Each base as the mean of its patterns warped into its frame (each scaled to unit RMS on the annulus)."""
    size = images.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(size, device=images.device) - size // 2,
                            torch.arange(size, device=images.device) - size // 2, indexing="ij")
    grid = torch.stack([xx.ravel(), yy.ravel()], 1).to(images.dtype)
    keep = torch.as_tensor(annulus.ravel(), device=images.device)
    total = torch.zeros_like(bases)
    count = torch.zeros(len(bases), device=images.device)
    for s in range(0, len(images), BLOCK_PATTERNS):
        part = slice(s, s + BLOCK_PATTERNS)
        warped = sample(images[part][:, None], apply(matrix[part], shift[part], grid))[:, 0]
        warped = warped / warped[:, keep].pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-12)
        total.index_add_(0, labels[part], warped.reshape(-1, size, size))
        count.index_add_(0, labels[part], torch.ones(len(warped), device=images.device))
    used = count > 0
    out = bases.clone()
    out[used] = total[used] / count[used, None, None]
    return out
