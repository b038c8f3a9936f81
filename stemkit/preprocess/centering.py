"""Direct-beam centring: where the beam hits each pattern, a smooth descan fit, and re-centred data.

Beam positions are measured per pattern in two ways:

- ``"com"``: the brightest disk-sized region (the pattern blurred by a box the size of
  the beam) gives a coarse position, refined by the centre of mass inside a circular
  window of 1.5 beam radii + 2 px, re-centred three times.
- ``"xcorr"``: the coarse position is the maximum of the cross-correlation with a probe
  template (the direct beam of the mean pattern, or a vacuum pattern you give), which
  matches the disk's shape and is less sensitive to noise; then the same centre-of-mass
  refinement.

Both look for the beam only within ``search_radius`` (default 4 beam radii) of the
beam in the vacuum probe (if given) or else in the mean pattern, so that a Bragg disk that outshines the direct beam (thick
crystals near a Bragg condition) is not taken for it. Pass a larger ``search_radius``
for a descan of more than that.

The descan (the beam moving on the detector as the probe scans) is fitted with a
low-order polynomial in the scan position by iteratively re-weighted least squares
(Tukey biweight), so outliers such as patterns over holes or thick grains do not bend it.
:func:`center` then resamples every pattern so the beam sits at k = 0.
"""

from __future__ import annotations

from typing import Literal

import dask.array as da
import numpy as np
import xarray as xr
from scipy import ndimage

from stemkit.data.contract import K_DIMS, SCAN_DIMS
from stemkit.preprocess.kernels import map_patterns

REFINE_ITERATIONS = 3
REFERENCE_PATTERNS = 256
TUKEY_C = 4.685


# -- the beam's size ------------------------------------------------------------------
def beam_radius(data: xr.DataArray) -> float:
    """Direct-beam radius in 1/Å, from the half-maximum area of the brightest disk of the mean pattern."""
    pattern = np.asarray(data.stem.mean_pattern().values, dtype=float)
    return radius_px_of(pattern) * float(data.stem.k_step[1])


def radius_px_of(pattern: np.ndarray) -> float:
    smooth = ndimage.gaussian_filter(pattern, 1.0)
    peak = np.unravel_index(np.argmax(smooth), smooth.shape)
    background = np.median(smooth)
    level = background + 0.5 * (smooth[peak] - background)
    labels, _ = ndimage.label(smooth >= level)
    area = float((labels == labels[peak]).sum())
    return max(np.sqrt(area / np.pi), 0.5)


# -- per-pattern positions --------------------------------------------------------------
def beam_position(
    data: xr.DataArray,
    *,
    method: Literal["com", "xcorr"] = "com",
    radius: float | None = None,
    probe: np.ndarray | xr.DataArray | None = None,
    search_radius: float | None = None,
) -> xr.Dataset:
    """Measure the direct-beam position in every pattern.

    Parameters
    ----------
    data
        Canonical 4D DataArray (numpy or dask; the result is lazy on dask).
    method
        ``"com"`` or ``"xcorr"`` (see the module docstring).
    radius
        Direct-beam radius in 1/Å; measured from the mean pattern when not given.
    probe
        For ``"xcorr"``: a ``(ky, kx)`` image of the probe (a vacuum pattern); default:
        the direct beam cut out of the mean pattern.
    search_radius
        How far (1/Å) the beam may lie from where it is in the mean pattern; default
        four beam radii.

    Returns
    -------
    xarray.Dataset
        ``beam_ky`` and ``beam_kx`` (1/Å, in the data's k coordinates) on ``(scan_y, scan_x)``.
    """
    if method not in ("com", "xcorr"):
        raise ValueError(f"method must be 'com' or 'xcorr'; got {method!r}")
    step = float(data.stem.k_step[1])
    radius_px = (radius if radius is not None else beam_radius(data)) / step
    reference = reference_image(data, probe)
    search_px = None if search_radius is None else search_radius / step
    if method == "com":
        kernel = beam_kernel(reference, radius_px, search_px)
    else:
        allowed = _search_window(reference, radius_px, search_px)
        kernel = _xcorr_kernel(probe_template(reference, radius_px), radius_px, allowed)
    rows_cols = map_patterns(data, kernel, out_shape=(2,), dtype=np.float64)
    return positions_dataset(data, rows_cols, method=method, radius_px=radius_px)


def positions_dataset(data: xr.DataArray, rows_cols, *, method: str, radius_px: float) -> xr.Dataset:
    ky0, kx0 = (float(data[d].values[0]) for d in K_DIMS)
    sy, sx = data.stem.k_step
    coords = {d: data[d] for d in SCAN_DIMS}
    attrs = {"units": "1/Å"}
    return xr.Dataset(
        {
            "beam_ky": (SCAN_DIMS, ky0 + rows_cols[..., 0] * sy, attrs),
            "beam_kx": (SCAN_DIMS, kx0 + rows_cols[..., 1] * sx, attrs),
        },
        coords=coords,
        attrs={"method": method, "beam_radius_px": float(radius_px)},
    )


def _search_window(image: np.ndarray, radius_px: float, search_px: float | None) -> np.ndarray:
    """Pixels within ``search_px`` (default 4 beam radii) of the beam in the reference image."""
    reference = _locate(image[None], radius_px, np.ones(image.shape, bool))[0]
    search_px = 4 * radius_px if search_px is None else search_px
    rows, cols = np.indices(image.shape)
    return np.hypot(rows - reference[0], cols - reference[1]) <= search_px


def beam_kernel_start(image: np.ndarray, radius_px: float, search_px: float | None = None) -> tuple[np.ndarray, float]:
    """Where :func:`beam_kernel` looks: the beam's (row, column) in ``image`` and the search radius in px."""
    reference = _locate(image[None], radius_px, np.ones(image.shape, bool))[0]
    return reference, 4 * radius_px if search_px is None else search_px


def beam_kernel(image: np.ndarray, radius_px: float, search_px: float | None = None):
    """The ``"com"`` beam finder as a kernel of a ``(..., ky, kx)`` block, giving ``(..., 2)`` (row, column)."""
    allowed = _search_window(image, radius_px, search_px)
    # only the search window and the reach of the refinement are ever read
    reach = int(np.ceil(1.5 * radius_px + 2.0)) + 2
    rows, cols = np.nonzero(allowed)
    r0, r1 = max(rows.min() - reach, 0), min(rows.max() + reach + 1, allowed.shape[0])
    c0, c1 = max(cols.min() - reach, 0), min(cols.max() + reach + 1, allowed.shape[1])
    window = allowed[r0:r1, c0:c1]
    offset = np.array([r0, c0], dtype=float)

    def kernel(block: np.ndarray) -> np.ndarray:
        patterns = _flat(np.asarray(block)[..., r0:r1, c0:c1])
        return (_locate(patterns, radius_px, window) + offset).reshape(*block.shape[:-2], 2)

    return kernel


def _locate(patterns: np.ndarray, radius_px: float, allowed: np.ndarray) -> np.ndarray:
    """Brightest beam-sized region within ``allowed``, refined by the centre of mass.

    Only the bounding box of ``allowed`` (plus the filter's reach) is filtered.
    """
    size = max(3, int(round(2 * radius_px)) | 1)
    rows, cols = np.nonzero(allowed)
    r0, r1 = max(rows.min() - size, 0), min(rows.max() + size + 1, allowed.shape[0])
    c0, c1 = max(cols.min() - size, 0), min(cols.max() + size + 1, allowed.shape[1])
    smooth = ndimage.uniform_filter(patterns[:, r0:r1, c0:c1], size=(1, size, size), mode="constant")
    coarse = _argmax_rows_cols(np.where(allowed[None, r0:r1, c0:c1], smooth, -np.inf)) + np.array([r0, c0])
    return _refine(patterns, coarse, radius_px)


def _xcorr_kernel(template: np.ndarray, radius_px: float, allowed: np.ndarray):
    template_ft = np.conj(np.fft.rfft2(template))
    shape = template.shape

    def kernel(block: np.ndarray) -> np.ndarray:
        patterns = _flat(block)
        correlation = np.fft.irfft2(np.fft.rfft2(patterns) * template_ft[None], s=shape)
        correlation = np.fft.fftshift(correlation, axes=(1, 2))
        # the template sits at the array centre, so after fftshift the peak index is the beam position
        coarse = _argmax_rows_cols(np.where(allowed[None], correlation, -np.inf))
        return _refine(patterns, coarse, radius_px).reshape(*block.shape[:2], 2)

    return kernel


def reference_image(data: xr.DataArray, probe) -> np.ndarray:
    """The vacuum probe if given (where the beam is without a specimen), else the mean pattern.

    The mean is taken over an evenly strided subset of at most about 256 patterns, which
    is as good a reference and costs one read of a small part of a large scan.
    """
    if probe is None:
        n_y, n_x = data.sizes["scan_y"], data.sizes["scan_x"]
        stride = max(1, int(np.ceil(np.sqrt(n_y * n_x / REFERENCE_PATTERNS))))
        subset = data.isel(scan_y=slice(None, None, stride), scan_x=slice(None, None, stride))
        values = np.asarray(subset.values)
        probe = values.mean(axis=(0, 1), dtype=np.float64)
        if not np.all(np.isfinite(probe)):
            probe = np.nanmean(values.astype(np.float64), axis=(0, 1))
    image = np.asarray(probe, dtype=float)
    expected = (data.sizes["ky"], data.sizes["kx"])
    if image.shape != expected:
        raise ValueError(f"the probe must be a (ky, kx) image of shape {expected}; got {image.shape}")
    return image


def probe_template(image: np.ndarray, radius_px: float) -> np.ndarray:
    """The beam cut out of ``image`` and moved to the array centre, so correlation peaks sit at the beam."""
    centre = _locate(image[None], radius_px, np.ones(image.shape, bool))[0]
    rows, cols = np.indices(image.shape)
    window = np.hypot(rows - centre[0], cols - centre[1]) <= 1.5 * radius_px + 2
    probe_only = np.where(window, image - np.median(image), 0.0)
    shift = np.array(image.shape) // 2 - centre
    return ndimage.shift(probe_only, shift, order=1, mode="constant")


def _flat(block: np.ndarray) -> np.ndarray:
    patterns = np.asarray(block, dtype=np.float64).reshape(-1, *block.shape[-2:])
    return patterns if np.isfinite(patterns).all() else np.where(np.isfinite(patterns), patterns, 0.0)


def _argmax_rows_cols(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(images.shape[0], -1).argmax(axis=1)
    return np.stack(np.unravel_index(flat, images.shape[1:]), axis=1).astype(np.float64)


def _refine(patterns: np.ndarray, start: np.ndarray, radius_px: float) -> np.ndarray:
    """Centre of mass in a circular window around ``start``, re-centred a few times.

    Only a box around each window is read (a strided view of the zero-padded patterns, so
    pixels off the detector count as empty), and the moments come from the box's row and
    column sums: the cost does not grow with the detector size. Written with few numpy calls
    (no Python-level helpers inside the loop): it runs in the peak finder's threads, where
    time spent holding the GIL is time the other threads cannot run Python.
    """
    window_radius = 1.5 * radius_px + 2.0
    half = int(np.ceil(window_radius)) + 1
    size = 2 * half + 1
    offsets = np.arange(-half, half + 1)
    n, n_rows, n_cols = patterns.shape
    index = np.arange(n)
    limits = np.array([n_rows - 1, n_cols - 1])
    centre = start.copy()
    view, pad = None, 0
    for _ in range(REFINE_ITERATIONS):
        base = np.round(centre)
        base[np.isnan(base)] = 0
        base = base.astype(int)
        np.minimum(np.maximum(base, 0, out=base), limits, out=base)
        if view is None or pad == 0:
            near = _near_edge(base, half, n_rows, n_cols)
            if view is None or near:
                pad = half if near else 0
                padded = np.pad(patterns, ((0, 0), (pad, pad), (pad, pad))) if pad else patterns
                s0, s1, s2 = padded.strides
                shape = (n, padded.shape[1] - size + 1, padded.shape[2] - size + 1, size, size)
                view = np.lib.stride_tricks.as_strided(padded, shape, (s0, s1, s2, s1, s2), writeable=False)
        rows = base[:, 0, None] + offsets  # (n, size)
        cols = base[:, 1, None] + offsets
        distance2 = (rows - centre[:, 0, None])[:, :, None] ** 2 + (cols - centre[:, 1, None])[:, None, :] ** 2
        box = view[index, base[:, 0] - half + pad, base[:, 1] - half + pad].astype(np.float64)
        weights = np.where(distance2 <= window_radius**2, box, 0.0)
        total = weights.sum(axis=(1, 2))
        ok = total > 0
        divisor = np.where(ok, total, 1)
        centre = np.empty((n, 2))
        np.divide((weights.sum(axis=2) * rows).sum(axis=1), divisor, out=centre[:, 0])
        np.divide((weights.sum(axis=1) * cols).sum(axis=1), divisor, out=centre[:, 1])
        centre[~ok] = np.nan
    return centre


def _near_edge(base: np.ndarray, half: int, n_rows: int, n_cols: int) -> bool:
    """Whether any box of ``half`` px around ``base`` reaches past the patterns' border."""
    low, high = base.min(axis=0), base.max(axis=0)
    return bool(low.min() < half or high[0] > n_rows - 1 - half or high[1] > n_cols - 1 - half)


# -- descan fit ----------------------------------------------------------------------
def fit_descan(
    positions: xr.Dataset,
    *,
    order: int = 1,
    robust: bool = True,
    variables: tuple[str, str] = ("beam_ky", "beam_kx"),
) -> xr.Dataset:
    """Fit a smooth descan to measured beam positions.

    Parameters
    ----------
    positions
        Output of :func:`beam_position` (or any Dataset holding ``variables``).
    order
        Polynomial order in the scan position: 0 (constant), 1 (plane, default), 2 or 3.
    robust
        Down-weight outliers with a Tukey biweight (scale from the median absolute
        deviation); otherwise ordinary least squares.
    variables
        The two position variables to fit.

    Returns
    -------
    xarray.Dataset
        The ``variables`` from the fit on the same grid, with the polynomial
        coefficients and the fraction of outliers in ``attrs``.
    """
    if order not in (0, 1, 2, 3):
        raise ValueError(f"order must be 0, 1, 2 or 3; got {order!r}")
    positions = positions.compute()
    design = _design_matrix(positions, order)
    fitted, attrs = {}, {"descan_order": order}
    for name in variables:
        values = positions[name].values.ravel()
        good = np.isfinite(values)
        if good.sum() < design.shape[1]:
            raise ValueError(
                f"only {int(good.sum())} patterns have a measurable beam, too few for an order-{order} descan fit; "
                "check that the direct beam is on the detector, or lower the order"
            )
        coefficients, weights = _irls(design[good], values[good], robust)
        fitted[name] = (SCAN_DIMS, (design @ coefficients).reshape(positions[name].shape), {"units": "1/Å"})
        attrs[f"{name}_coefficients"] = coefficients.tolist()
        attrs[f"{name}_outlier_fraction"] = float(np.mean(weights == 0))
    return xr.Dataset(fitted, coords=positions.coords, attrs=positions.attrs | attrs)


def _design_matrix(positions: xr.Dataset, order: int) -> np.ndarray:
    n_y, n_x = positions.sizes["scan_y"], positions.sizes["scan_x"]
    y, x = np.meshgrid(np.linspace(-1, 1, n_y), np.linspace(-1, 1, n_x), indexing="ij")
    terms = [y.ravel() ** i * x.ravel() ** j for i in range(order + 1) for j in range(order + 1 - i)]
    return np.stack(terms, axis=1)


def _irls(design: np.ndarray, values: np.ndarray, robust: bool, iterations: int = 20):
    weights = np.ones_like(values)
    coefficients = np.linalg.lstsq(design, values, rcond=None)[0]
    if not robust:
        return coefficients, weights
    for _ in range(iterations):
        residual = values - design @ coefficients
        scale = 1.4826 * np.median(np.abs(residual - np.median(residual)))
        if scale <= 1e-12:
            break
        u = residual / (TUKEY_C * scale)
        weights = np.where(np.abs(u) < 1, (1 - u**2) ** 2, 0.0)
        sqrt_w = np.sqrt(weights)
        coefficients = np.linalg.lstsq(design * sqrt_w[:, None], values * sqrt_w, rcond=None)[0]
    return coefficients, weights


# -- re-centring ----------------------------------------------------------------------
def center(
    data: xr.DataArray,
    *,
    positions: xr.Dataset | None = None,
    method: Literal["com", "xcorr"] = "com",
    order: int = 1,
) -> xr.DataArray:
    """Return data whose direct beam sits at k = 0 in every pattern.

    Parameters
    ----------
    data
        Canonical 4D DataArray (numpy or dask; lazy on dask).
    positions
        Beam positions to correct, e.g. a :func:`fit_descan` result; default: measured
        with ``method`` and fitted with a polynomial of ``order``.
    method, order
        Passed to :func:`beam_position` and :func:`fit_descan` when ``positions`` is None.

    Returns
    -------
    xarray.DataArray
        Same shape and coordinates. Each pattern is resampled (linear interpolation,
        which conserves counts and never goes negative) so that its beam lands on
        k = (0, 0); when the shift is the same for every pattern, only the k
        coordinates change and no pixel is resampled. ``attrs["centering"]`` records
        what was done.

    Notes
    -----
    Pixels shifted in from outside the detector are 0.
    """
    if positions is None:
        positions = fit_descan(beam_position(data, method=method), order=order)
    positions = positions.compute()
    shift_ky = positions["beam_ky"].values
    shift_kx = positions["beam_kx"].values
    step_y, step_x = data.stem.k_step
    if np.ptp(shift_ky) < 1e-3 * step_y and np.ptp(shift_kx) < 1e-3 * step_x:
        centred = data.assign_coords(
            ky=data.ky - float(np.mean(shift_ky)), kx=data.kx - float(np.mean(shift_kx))
        )
        for d in K_DIMS:
            centred[d].attrs = dict(data[d].attrs)
        how = "k coordinates shifted (uniform beam position)"
    else:
        shifts_px = np.stack([shift_ky / step_y, shift_kx / step_x], axis=-1)
        centred = data.copy(data=_shift_patterns(data, shifts_px))
        how = "patterns resampled with linear interpolation"
    centred.attrs["centering"] = {
        "how": how,
        "method": positions.attrs.get("method", "given"),
        "descan_order": positions.attrs.get("descan_order"),
        "mean_shift_k": [float(np.mean(shift_ky)), float(np.mean(shift_kx))],
    }
    return centred


def _shift_patterns(data: xr.DataArray, shifts_px: np.ndarray):
    """Move every pattern by ``-shift`` pixels (so the beam goes to the k origin)."""
    if isinstance(data.data, da.Array):
        shifts = da.from_array(shifts_px, chunks=(*data.data.chunks[:2], 2))
        return da.map_blocks(_shift_block, data.data, shifts[:, :, None, :], dtype=np.float32)
    return _shift_block(np.asarray(data.data), shifts_px[:, :, None, :])


def _shift_block(block: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    shifts = shifts[:, :, 0, :]
    out = np.empty(block.shape, dtype=np.float32)
    for index in np.ndindex(block.shape[:2]):
        out[index] = ndimage.shift(block[index].astype(np.float32), -shifts[index], order=1, mode="constant", cval=0.0)
    return out
