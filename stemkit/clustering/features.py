"""Features to cluster diffraction patterns by: the pipeline of Shi et al. (npj Comput. Mater. 2022).

1. Centre every pattern on its direct beam (:func:`stemkit.preprocess.center`), by default
   with a smooth descan fitted to the measured beam positions (``centering="descan"``), or
   each pattern on its own measured beam, as the authors did (``centering="pattern"``).
2. Mask an annulus that removes the direct beam and the detector edge.
3. Keep the detector pixels whose ``log(std + 1)`` across the scan exceeds ``std_fraction``
   (0.3) of its maximum inside the annulus: where the patterns differ.
4. The features are the raw intensities at those pixels, optionally log- or square-root
   scaled and reduced by PCA (randomised, or incremental in batches).

The data are read chunk by chunk (numpy input is wrapped in dask chunks of whole scan rows,
so both run the same code): one pass finds the beam and sums every pixel and its square
(a second is needed only when the patterns must be resampled to centre them), one extracts
the selected pixels. Only the features (``n_patterns × n_pixels``
float32, ``n_pixels <= max_pixels``) are ever held in memory.
"""

from __future__ import annotations

from typing import Literal

import dask.array as da
import numpy as np
import xarray as xr
from sklearn.decomposition import PCA, IncrementalPCA

from stemkit.data.contract import DIMS, K_DIMS
from stemkit.clustering.progress import compute
from stemkit.preprocess import beam_position, center, fit_descan
from stemkit.preprocess.centering import radius_px_of, reference_image
from stemkit.preprocess.kernels import map_patterns

CENTERINGS = ("descan", "pattern", "none")
SCALINGS = ("none", "log", "sqrt")
PCA_SOLVERS = ("randomized", "incremental")
CHUNK_BYTES = 64 * 2**20
PCA_BATCH = 4096


def as_lazy(data: xr.DataArray) -> xr.DataArray:
    """``data`` backed by dask chunks of whole patterns (numpy input: about 64 MiB of scan rows per chunk)."""
    if isinstance(data.data, da.Array):
        if data.data.numblocks[2:] != (1, 1):
            return data.chunk({"ky": -1, "kx": -1})
        return data
    row_bytes = data.sizes["scan_x"] * data.sizes["ky"] * data.sizes["kx"] * max(data.dtype.itemsize, 4)
    rows = max(1, int(CHUNK_BYTES // max(row_bytes, 1)))
    return data.chunk({"scan_y": rows, "scan_x": -1, "ky": -1, "kx": -1})


def check_data(data: xr.DataArray) -> None:
    """Raise a ValueError naming the problem if ``data`` is not a canonical 4D DataArray."""
    if not isinstance(data, xr.DataArray):
        raise TypeError(
            f"expected the 4D DataArray `intensity` with dims {DIMS}; got {type(data).__name__}. "
            "Pass e.g. dataset['intensity'], or build one with stemkit.datacube(...)."
        )
    if tuple(data.dims) != DIMS:
        raise ValueError(f"expected dims {DIMS}; got {tuple(data.dims)}. Transpose with data.transpose(*{DIMS}).")
    if data.sizes["scan_y"] * data.sizes["scan_x"] < 2:
        raise ValueError("clustering needs at least two probe positions; got one.")


class ClusteringFeatures:
    """The feature pipeline: centring, annular mask, variance-based pixel selection, scaling, PCA.

    Parameters
    ----------
    centering
        ``"descan"``: shift each pattern by a plane fitted to the measured beam positions
        (robust to patterns over holes); ``"pattern"``: by its own measured position (Shi
        et al.); ``"none"``: the data are centred already.
    inner, outer
        Radii (1/Å) of the annulus kept; default: the direct-beam radius + 2 pixels, and
        the detector edge − 2 pixels.
    std_fraction
        Keep pixels with ``log(std + 1) > std_fraction · max`` over the annulus.
    max_pixels
        At most this many pixels are kept (those of largest standard deviation), which
        bounds the memory: ``n_patterns × max_pixels`` float32.
    scaling
        ``"none"`` (raw intensities, as the authors), ``"log"`` (``log(1 + I)``) or
        ``"sqrt"`` (which makes Poisson noise uniform).
    n_components
        Reduce the features to this many principal components; ``None`` keeps the pixels.
    pca
        ``"randomized"`` PCA, or ``"incremental"`` (fitted in batches of 4096 patterns).
    shift_tolerance
        Fitted beam shifts whose spread over the scan is below this many pixels are applied
        as one uniform shift of the k coordinates (no resampling, which would only blur).
    seed
        Seed of the randomised PCA.
    progress
        Show tqdm progress bars.

    Attributes
    ----------
    positions_ : xarray.Dataset or None
        The beam positions (1/Å) the patterns were centred with.
    beam_radius_ : float
        Direct-beam radius (1/Å) measured from the data.
    annulus_ : xarray.DataArray
        The boolean annulus on ``(ky, kx)``.
    log_std_ : xarray.DataArray
        ``log(std + 1)`` of every pixel across the scan (0 outside the annulus).
    pixels_ : xarray.DataArray
        The boolean mask of the selected pixels on ``(ky, kx)``.
    pca_ : sklearn estimator or None
        The fitted PCA.
    """

    def __init__(
        self,
        *,
        centering: Literal["descan", "pattern", "none"] = "descan",
        inner: float | None = None,
        outer: float | None = None,
        std_fraction: float = 0.3,
        max_pixels: int = 2048,
        scaling: Literal["none", "log", "sqrt"] = "none",
        n_components: int | None = None,
        pca: Literal["randomized", "incremental"] = "randomized",
        shift_tolerance: float = 0.05,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        self.centering = centering
        self.inner = inner
        self.outer = outer
        self.std_fraction = std_fraction
        self.max_pixels = max_pixels
        self.scaling = scaling
        self.n_components = n_components
        self.pca = pca
        self.shift_tolerance = shift_tolerance
        self.seed = seed
        self.progress = progress

    # -- public -------------------------------------------------------------------------
    def fit_transform(self, data: xr.DataArray) -> np.ndarray:
        """Learn the centring and the pixel selection from ``data``; return its features.

        Parameters
        ----------
        data
            Canonical 4D DataArray, numpy or dask.

        Returns
        -------
        numpy.ndarray
            ``(n_patterns, n_features)`` float32, patterns in C order of ``(scan_y, scan_x)``.
            ``n_features`` is 0 when no pixel varies across the scan.
        """
        self._check_parameters()
        check_data(data)
        lazy = as_lazy(data)
        self.beam_radius_ = radius_px_of(reference_image(lazy, None)) * float(lazy.stem.k_step[1])
        sums = self._first_pass(lazy)
        centred = self.centred(lazy)
        self.annulus_ = self._annulus(centred)
        if self.positions_ is not None and not self.positions_.attrs["uniform"]:
            sums = self._pixel_sums(centred)  # the patterns were resampled: their statistics change
        self.log_std_ = self._log_std(centred, *sums)
        self.pixels_ = self._select_pixels()
        features = self._extract(centred)
        self.pca_ = None
        if self.n_components is not None and features.shape[1] > self.n_components:
            features = self._reduce(features)
        return features

    def centred(self, data: xr.DataArray) -> xr.DataArray:
        """``data`` (lazy) centred with the fitted beam positions, as the features saw it."""
        lazy = as_lazy(data)
        if self.positions_ is None:
            return lazy
        return as_lazy(center(lazy, positions=self.positions_))

    # -- steps --------------------------------------------------------------------------
    def _check_parameters(self) -> None:
        if self.centering not in CENTERINGS:
            raise ValueError(f"centering must be one of {CENTERINGS}; got {self.centering!r}")
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}; got {self.scaling!r}")
        if self.pca not in PCA_SOLVERS:
            raise ValueError(f"pca must be one of {PCA_SOLVERS}; got {self.pca!r}")
        if not 0 <= self.std_fraction < 1:
            raise ValueError(f"std_fraction must lie in [0, 1); got {self.std_fraction!r} (the authors use 0.3)")
        if not (isinstance(self.max_pixels, int) and self.max_pixels > 0):
            raise ValueError(f"max_pixels must be a positive integer; got {self.max_pixels!r}")
        if self.n_components is not None and not (isinstance(self.n_components, int) and self.n_components > 0):
            raise ValueError(f"n_components must be a positive integer or None; got {self.n_components!r}")

    def _first_pass(self, data: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
        """Measure the beam (unless ``centering="none"``) and sum every pixel and its square, in one read."""
        array = data.data.astype(np.float64)
        sums = (array.sum(axis=(0, 1)), (array**2).sum(axis=(0, 1)))
        if self.centering == "none":
            self.positions_ = None
            return compute(*sums, description="pixel statistics", progress=self.progress)
        measured, *sums = compute(beam_position(data, radius=self.beam_radius_), *sums,
                                  description="beam and pixel statistics", progress=self.progress)
        self.positions_ = self._fitted_positions(measured, float(data.stem.k_step[1]))
        return tuple(sums)

    def _fitted_positions(self, measured: xr.Dataset, step: float) -> xr.Dataset:
        if self.centering == "descan":
            positions = fit_descan(measured, order=1)
        else:
            positions = measured.fillna(measured.median())
        spread = max(float(np.ptp(positions[name].values)) for name in ("beam_ky", "beam_kx")) / step
        uniform = spread < self.shift_tolerance
        if uniform:
            positions = positions.copy(deep=True)
            for name in ("beam_ky", "beam_kx"):
                positions[name][:] = float(positions[name].mean())
        positions.attrs |= {"spread_px": spread, "uniform": bool(uniform)}
        return positions

    def _pixel_sums(self, centred: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
        array = centred.data.astype(np.float64)
        return compute(array.sum(axis=(0, 1)), (array**2).sum(axis=(0, 1)), description="pixel statistics",
                       progress=self.progress)

    def _annulus(self, centred: xr.DataArray) -> xr.DataArray:
        step = float(centred.stem.k_step[1])
        inner = self.beam_radius_ + 2 * step if self.inner is None else float(self.inner)
        edge = min(float(np.abs(centred[d]).max()) for d in K_DIMS)
        outer = edge - 2 * step if self.outer is None else float(self.outer)
        if not 0 <= inner < outer:
            raise ValueError(
                f"the annulus needs 0 <= inner < outer; got inner={inner:.4g}, outer={outer:.4g} 1/Å "
                f"(the detector reaches {edge:.4g} 1/Å from the beam); give smaller inner= or larger outer="
            )
        radius = np.hypot(centred.ky, centred.kx)
        annulus = (radius >= inner) & (radius < outer)
        annulus.attrs = {"inner": inner, "outer": outer, "units": "1/Å"}
        return annulus.rename("annulus")

    def _log_std(self, centred: xr.DataArray, total: np.ndarray, squares: np.ndarray) -> xr.DataArray:
        n = centred.sizes["scan_y"] * centred.sizes["scan_x"]
        mean = total / n
        std = np.sqrt(np.clip(squares / n - mean**2, 0, None))
        # relative round-off of the sums: no real spread below it
        std = np.where(std > 1e-6 * np.sqrt(np.abs(mean) * np.abs(mean).max() + 1e-300), std, 0.0)
        log_std = np.where(self.annulus_.values, np.log(std + 1.0), 0.0)
        coords = {d: centred[d] for d in K_DIMS}
        return xr.DataArray(log_std, dims=K_DIMS, coords=coords, name="log_std", attrs={"long_name": "log(std + 1)"})

    def _select_pixels(self) -> xr.DataArray:
        values = self.log_std_.values
        top = float(values.max())
        selected = (values > self.std_fraction * top) if top > 0 else np.zeros(values.shape, bool)
        if selected.sum() > self.max_pixels:
            threshold = np.sort(values[selected])[-self.max_pixels]
            selected &= values >= threshold
            selected[np.unravel_index(np.flatnonzero(selected)[self.max_pixels :], values.shape)] = False
        pixels = self.log_std_.copy(data=selected).rename("pixels")
        pixels.attrs = {"std_fraction": self.std_fraction, "n_pixels": int(selected.sum())}
        return pixels

    def _extract(self, centred: xr.DataArray) -> np.ndarray:
        rows, cols = np.nonzero(self.pixels_.values)
        scaling = self.scaling

        def kernel(block: np.ndarray) -> np.ndarray:
            values = np.asarray(block[..., rows, cols], dtype=np.float32)
            if scaling == "log":
                return np.log1p(np.clip(values, 0, None))
            if scaling == "sqrt":
                return np.sqrt(np.clip(values, 0, None))
            return values

        lazy = map_patterns(centred, kernel, out_shape=(len(rows),), dtype=np.float32)
        (features,) = compute(lazy, description="features", progress=self.progress)
        n_patterns = centred.sizes["scan_y"] * centred.sizes["scan_x"]
        return np.ascontiguousarray(features.reshape(n_patterns, len(rows)))

    def _reduce(self, features: np.ndarray) -> np.ndarray:
        n = features.shape[0]
        if self.pca == "incremental":
            model = IncrementalPCA(n_components=self.n_components, batch_size=max(PCA_BATCH, self.n_components))
            for start in range(0, n, PCA_BATCH):
                batch = features[start : start + PCA_BATCH]
                if len(batch) >= self.n_components:
                    model.partial_fit(batch)
            reduced = np.concatenate([model.transform(features[s : s + PCA_BATCH]) for s in range(0, n, PCA_BATCH)])
        else:
            model = PCA(n_components=self.n_components, svd_solver="randomized", random_state=self.seed)
            reduced = model.fit_transform(features)
        self.pca_ = model
        return reduced.astype(np.float32)


def label_sums(centred: xr.DataArray, labels: np.ndarray, n_labels: int, *, progress: bool = True):
    """Sum of the patterns and count of every label, accumulated chunk by chunk.

    Parameters
    ----------
    centred
        4D DataArray (dask-backed, see :func:`as_lazy`).
    labels
        ``(scan_y, scan_x)`` integers in ``0 .. n_labels - 1``.
    n_labels
        Number of labels.

    Returns
    -------
    sums, counts
        ``(n_labels, ky, kx)`` float64 and ``(n_labels,)`` int64.
    """
    array = centred.data
    shape = array.shape[2:]
    label_array = da.from_array(np.asarray(labels, dtype=np.int64)[:, :, None, None], chunks=(*array.chunks[:2], 1, 1))

    def partial(block: np.ndarray, block_labels: np.ndarray) -> np.ndarray:
        flat = np.asarray(block, dtype=np.float64).reshape(-1, shape[0] * shape[1])
        one_hot = np.zeros((n_labels, flat.shape[0]))
        one_hot[block_labels.ravel(), np.arange(flat.shape[0])] = 1.0
        return (one_hot @ flat).reshape(1, 1, n_labels, *shape)

    parts = da.map_blocks(
        partial,
        array,
        label_array,
        dtype=np.float64,
        chunks=((1,) * array.numblocks[0], (1,) * array.numblocks[1], (n_labels,), (shape[0],), (shape[1],)),
        new_axis=[4],
        meta=np.empty((0, 0, 0, 0, 0)),
    )
    (sums,) = compute(parts.sum(axis=(0, 1)), description="mean patterns", progress=progress)
    counts = np.bincount(np.asarray(labels).ravel(), minlength=n_labels)
    return sums, counts
