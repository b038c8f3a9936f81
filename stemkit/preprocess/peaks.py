"""Bragg-peak finding: a matched filter with the probe on binned patterns, significance against
Poisson noise, and a least-squares fit of the probe template to each candidate, batched in torch.

For every pattern:

1. screen: sum 2×2 (larger disks: more) pixels into bins and correlate with the binned probe
   template (unit sum; the direct beam of the mean pattern, or a vacuum pattern) and with
   an annulus around it, two patterns per complex FFT, giving the excess ``C − b`` of the
   template-weighted counts over the annulus mean; keep the local maxima whose Li & Ma
   (1983) on/off significance (``noise="poisson"``: data in counts) or whose excess over
   its robust spread (MAD, ``noise="uniform"``) exceeds ``0.7 × threshold``: binning costs
   a disk some contrast, so the screen is generous and only says where to look (0.6 found
   the same reflections of the issue-4 benchmark, at 0.7 to 0.8, with 20-35 % more candidates);
2. measure each candidate at full resolution in one small window: fit a background plane
   to the annulus (``radius + 2`` to ``radius + 4`` px), then find the sub-pixel shift at
   which the template best fits the excess over it (``subpixel="fit"``: least squares
   through a bank of template shifts, see :mod:`stemkit.preprocess.subpixel`; ``"com"``:
   the Gaussian-windowed centroid of earlier versions; ``"none"``: the best whole pixel);
   with counts (``noise="poisson"``), a disk whose own counts outweigh the background under
   it then takes one step of the Poisson likelihood from there
   (:class:`~stemkit.preprocess.subpixel.PoissonStep`), which weighs the noisy bright top of
   a weak disk less than least squares does;
3. its significance is the on/off statistic of the template-weighted counts at that centre
   against the annulus (with σ from the screen's MAD for ``noise="uniform"``); keep those
   above ``threshold``, none within ``min_spacing`` of a stronger one, strongest first, at
   most ``max_peaks``; the intensity is the excess over the plane within the probe radius
   + 1 px.

Positions are returned relative to the direct beam of each pattern (measured with
:func:`beam_position` unless given), so ``kx = ky = 0`` is the beam in every pattern
without resampling anything. The direct beam itself is one of the peaks; when the beam is
measured here, that peak takes the measured beam position (its centre of mass over the
whole bright disk).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Literal

import numpy as np
import torch
import xarray as xr
from scipy import ndimage

from stemkit.data.contract import SCAN_DIMS
from stemkit.preprocess.centering import _refine as _centre_of_mass
from stemkit.preprocess.centering import beam_kernel_start, positions_dataset, probe_template, radius_px_of, reference_image
from stemkit.preprocess.kernels import map_patterns, torch_threads
from stemkit.preprocess.subpixel import PoissonStep, TemplateFit

FIELDS = ("ky", "kx", "intensity", "significance")
BATCH_ELEMENTS = 2**23  # pixels per batch on a GPU, and per dask chunk's batch
CPU_BLOCK_ELEMENTS = 2**22  # pixels per batch on the CPU (256 patterns of 128 × 128; fewer GIL handoffs than 128)
FINDER_CACHE = 8  # finders (template, filters, fit bank) kept for calls with the same probe and parameters
SETTLE_BYTES = 30 * 2**20  # see _settle_allocator
REFINE_ITERATIONS = 4
SCREEN_FRACTION = 0.7
MIN_FIT_RADIUS_PX = 2.5
LIKELIHOOD_CONTRAST = 1.0  # disk height over background above which the likelihood step is taken


def find_peaks(
    data: xr.DataArray,
    *,
    probe: np.ndarray | xr.DataArray | None = None,
    threshold: float = 5.0,
    min_spacing: float | None = None,
    max_peaks: int = 64,
    subpixel: Literal["fit", "com", "none"] = "fit",
    noise: Literal["poisson", "uniform"] = "poisson",
    positions: xr.Dataset | None = None,
    radius: float | None = None,
    device: str | torch.device = "cpu",
) -> xr.Dataset:
    """Find the Bragg disks of every pattern.

    Parameters
    ----------
    data
        Canonical 4D DataArray, numpy or dask (computed lazily, chunk by chunk). With
        ``noise="poisson"`` the intensities must be counts (multiply by the gain first).
    probe
        A ``(ky, kx)`` vacuum pattern of the probe; default: the direct beam of the mean pattern.
    threshold
        Detection threshold in standard deviations of the noise (see the module docstring).
    min_spacing
        Smallest distance between two peaks in 1/Å; default: the probe diameter.
    max_peaks
        Length of the padded ``peak`` dimension; the strongest peaks are kept.
    subpixel
        ``"fit"`` (least-squares fit of the shifted probe template; disks of a radius under
        2.5 px, too coarsely sampled for that, get ``"com"``), ``"com"`` (background-subtracted,
        Gaussian-windowed centre of mass) or ``"none"`` (whole pixels).
    noise
        ``"poisson"`` for counts, ``"uniform"`` for data of unknown scale (see above). With counts,
        weak disks whose counts outweigh the background take one step of the Poisson likelihood
        from the sub-pixel fit (:class:`~stemkit.preprocess.subpixel.PoissonStep`).
    positions
        Direct-beam positions (``beam_ky``, ``beam_kx``), e.g. from :func:`fit_descan`;
        default: measured with :func:`beam_position`.
    radius
        Probe radius in 1/Å; default: measured from the mean pattern.
    device
        Torch device for the computation (``"cuda"`` for a GPU). On the CPU, numpy data are
        processed by as many workers as ``torch.get_num_threads()``: this thread and worker
        processes (:mod:`stemkit.preprocess.workers`; threads where processes are not available).

    Returns
    -------
    xarray.Dataset
        ``kx``, ``ky`` (1/Å, relative to each pattern's direct beam), ``intensity``
        (integrated, background-subtracted), ``significance`` (σ), ``valid`` on
        ``(scan_y, scan_x, peak)``, padded with NaN / False; ``n_peaks``, ``beam_ky``
        and ``beam_kx`` on ``(scan_y, scan_x)``. ``attrs["k_extent"]`` is the detector's
        ``[kx_min, kx_max, ky_min, ky_max]`` (1/Å, pixel centres, in the data's frame: subtract a
        pattern's ``beam_kx``, ``beam_ky`` for its peaks' frame): where disks could have been seen.
    """
    if subpixel not in ("fit", "com", "none"):
        raise ValueError(f"subpixel must be 'fit', 'com' or 'none'; got {subpixel!r}")
    if noise not in ("poisson", "uniform"):
        raise ValueError(f"noise must be 'poisson' or 'uniform'; got {noise!r}")
    if not (isinstance(max_peaks, int) and max_peaks > 0):
        raise ValueError(f"max_peaks must be a positive integer; got {max_peaks!r}")
    k_step = data.stem.k_step
    step = float(k_step[1])
    reference = reference_image(data, probe)
    digest = _digest(reference)
    if radius is None:
        radius = _cached(("radius", digest), lambda: radius_px_of(reference)) * step
    radius_px = radius / step
    _check_room(data, radius_px)
    spacing_px = (min_spacing / step) if min_spacing is not None else 2 * radius_px
    settings = (radius_px, spacing_px, threshold, max_peaks, subpixel, noise, device, positions is None)
    finder = _cached(("finder", digest, *settings, str(torch.device(device))), lambda: _make_finder(reference, *settings))
    raw = _run(data, finder, max_peaks)
    if positions is None:
        positions = positions_dataset(data, raw[:, :, max_peaks, :2].astype(np.float64), method="com", radius_px=radius_px)
    attrs = locals_for_attrs(threshold, spacing_px * step, max_peaks, subpixel, noise, radius)
    return _peaks_dataset(data, raw[:, :, :max_peaks], positions.compute(), attrs, k_step)


MIN_PATTERN_PX = 16  # smallest pattern side find_peaks works on (also at least 6 disk radii + 10 px)


def _check_room(data: xr.DataArray, radius_px: float) -> None:
    """Refuse patterns too small to hold a disk, the ring that measures its background, and room around them."""
    rows, cols = data.sizes["ky"], data.sizes["kx"]
    needed = max(MIN_PATTERN_PX, int(np.ceil(6.0 * radius_px + 10.0 - 1e-6)))
    if min(rows, cols) < needed:
        raise ValueError(f"patterns of {rows} x {cols} px are too small to find Bragg disks of radius {radius_px:.1f} px "
                         f"in: find_peaks needs at least {needed} x {needed} px (the disk, the ring around it that "
                         f"measures the background, and room to move); use patterns binned or cropped less, or "
                         f"virtual detectors (data.stem.virtual_image) for such small patterns")


def probe_reference(data: xr.DataArray, probe=None, radius: float | None = None) -> tuple[np.ndarray, float]:
    """The probe image and radius (1/Å) :func:`find_peaks` works from: ``probe`` or the mean pattern,
    and ``radius`` or the one measured on that image. Passing both back to :func:`find_peaks` for
    parts of a scan finds every part's peaks as the whole scan would."""
    reference = reference_image(data, probe)
    if radius is None:
        radius = radius_px_of(reference) * float(data.stem.k_step[1])
    return reference, radius


def _make_finder(reference, radius_px, spacing_px, threshold, max_peaks, subpixel, noise, device, with_beam) -> "_PeakFinder":
    """The peak finder (and beam finder) for a probe image and the parameters of :func:`find_peaks`.

    Built with single-threaded torch: the fit bank's principal components (an eigendecomposition)
    round differently with more intra-op threads, and the peaks must not depend on how many
    threads the session that built the finder had (they moved by up to 0.009 px on the lattice
    benchmark files between a 1- and a 2-thread session).
    """
    template = np.clip(probe_template(reference, radius_px), 0, None)
    if template.sum() <= 0:
        raise ValueError("the probe template is empty: give a vacuum pattern as probe=, or check the data")
    beam = _BeamFinder(reference, radius_px) if with_beam else None
    with torch_threads(1):
        return _PeakFinder(template / template.sum(), radius_px, spacing_px, threshold, max_peaks, subpixel, noise, device, beam)


_CACHE: OrderedDict = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _digest(image: np.ndarray) -> bytes:
    """A fingerprint of an image's values and shape."""
    image = np.ascontiguousarray(image, dtype=np.float64)
    return hashlib.blake2b(image.view(np.uint8), digest_size=16, person=str(image.shape).encode()[:16]).digest()


def _cached(key: tuple, make):
    """``make()``, kept for later calls with the same ``key`` (the last :data:`FINDER_CACHE` finders).

    Building a finder (template, screen filters, the fit's bank and its principal
    components) takes several milliseconds, serial work that repeated calls (blocks of a
    scan, benchmarks, dashboards) need not repeat; the finder holds no state between batches.
    """
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    value = make()
    with _CACHE_LOCK:
        _CACHE[key] = value
        while len(_CACHE) > 2 * FINDER_CACHE:
            _CACHE.popitem(last=False)
    return value


def _run(data: xr.DataArray, finder: "_PeakFinder", max_peaks: int) -> np.ndarray:
    """The finder over every pattern: ``(n_y, n_x, max_peaks + 1, fields)``.

    On the CPU, blocks of :data:`CPU_BLOCK_ELEMENTS` pixels (whole patterns; of each chunk of dask data)
    run in as many workers as ``torch.get_num_threads()``: this thread and worker processes
    forked once per session (or, where there are none, Python threads of a pool kept between
    calls), each with single-threaded torch operations. The finder's several hundred small
    operations per block scale better that way than with intra-op threads, and a process of
    its own does not wait for another's GIL between them (two threads added 1.4-1.7× the
    rate of one, two processes 1.8-1.9×). The blocks do not depend on the number of
    workers, so neither do the results.
    """
    shape = (max_peaks + 1, len(FIELDS))
    if finder.device.type != "cpu":
        return np.asarray(map_patterns(data, finder, out_shape=shape, dtype=np.float32))
    _settle_allocator()
    threads = torch.get_num_threads()
    block = max(1, CPU_BLOCK_ELEMENTS // (finder.shape[0] * finder.shape[1]))
    with torch_threads(1):
        mapped = map_patterns(data, finder, out_shape=shape, dtype=np.float32, workers=threads, block_patterns=block, processes=True)
        return np.asarray(mapped)


_SETTLED = False


def _settle_allocator() -> None:
    """Once per process: let glibc's malloc recycle the finder's per-batch temporaries.

    glibc serves blocks above a threshold (128 KiB at first) with mmap, and gives a free top
    of the heap above twice that threshold back to the kernel; freeing an mmap'ed block
    raises the threshold to that block's size (up to 32 MiB). The finder's largest temporary
    (8 MiB for 256 patterns of 128 × 128) set it to 8 MiB, so the tens of MB that a batch
    allocates went back to the kernel after every batch and were faulted in again for the
    next: ~20 000 page faults and 20-50 ms of system time per 1024 patterns, the faults of
    two threads contending in the kernel. Allocating and freeing one 30 MiB block raises the
    threshold to 30 MiB (heap tops up to 60 MiB are kept). Where the thresholds were set
    explicitly (``mallopt``, ``MALLOC_MMAP_THRESHOLD_``), glibc keeps them and this does nothing;
    other allocators just allocate and free the block.
    """
    global _SETTLED
    if not _SETTLED:
        _SETTLED = True
        block = torch.empty(SETTLE_BYTES, dtype=torch.uint8)
        del block


def locals_for_attrs(threshold, min_spacing, max_peaks, subpixel, noise, radius) -> dict:
    """The parameters recorded in the result's attrs."""
    return {
        "method": "stemkit.find_peaks",
        "threshold_sigma": float(threshold),
        "min_spacing": float(min_spacing),
        "max_peaks": int(max_peaks),
        "subpixel": subpixel,
        "noise": noise,
        "probe_radius": float(radius),
    }


def _peaks_dataset(data: xr.DataArray, raw: np.ndarray, positions: xr.Dataset, attrs: dict, k_step) -> xr.Dataset:
    oy, ox = (float(data[d].values[0]) for d in ("ky", "kx"))
    sy, sx = k_step
    beam_ky = positions["beam_ky"].values[..., None]
    beam_kx = positions["beam_kx"].values[..., None]
    ky = oy + raw[..., 0] * sy - beam_ky
    kx = ox + raw[..., 1] * sx - beam_kx
    valid = np.isfinite(raw[..., 0])
    dims = (*SCAN_DIMS, "peak")
    k_attrs = {"units": "1/Å", "long_name": "position relative to the direct beam"}
    return xr.Dataset(
        {
            "kx": (dims, kx.astype(np.float32), k_attrs),
            "ky": (dims, ky.astype(np.float32), k_attrs),
            "intensity": (dims, raw[..., 2].astype(np.float32), {"units": data.attrs.get("units", "counts")}),
            "significance": (dims, raw[..., 3].astype(np.float32), {"units": "sigma"}),
            "valid": (dims, valid),
            "n_peaks": (SCAN_DIMS, valid.sum(axis=-1).astype(np.int32)),
            "beam_ky": (SCAN_DIMS, positions["beam_ky"].values, {"units": "1/Å"}),
            "beam_kx": (SCAN_DIMS, positions["beam_kx"].values, {"units": "1/Å"}),
        },
        coords={d: data[d] for d in SCAN_DIMS},
        attrs=attrs | {"beam_energy_kev": data.stem.beam_energy_kev, "k_extent": _k_extent(data)},
    )


def _k_extent(data: xr.DataArray) -> list[float]:
    """``[kx_min, kx_max, ky_min, ky_max]`` of the detector's pixel centres, 1/Å."""
    kx, ky = data["kx"].values, data["ky"].values
    return [float(kx.min()), float(kx.max()), float(ky.min()), float(ky.max())]


def _local_maxima_above(z: torch.Tensor, threshold: float, edge: int) -> torch.Tensor:
    """Flat indices into the packed maps ``z`` (``(n / 2, rows, cols, 2)``, see :func:`_correlate_pairs`)
    of pixels above ``threshold``, at least ``edge`` px inside the border, and >= their 8 neighbours.

    Pixels above threshold and not below their two neighbours in the same row (which rules
    out most pixels of a blob) are found on the whole maps; only those few are compared with
    the other six neighbours, through flat offsets into the contiguous maps.
    """
    n, rows, cols, _ = z.shape
    other_offsets = [2 * (dr * cols + dc) for dr in (-1, 1) for dc in (-1, 0, 1)]
    if z.device.type == "cpu":  # numpy's nonzero and fancy indexing are several times faster here
        maps = z.numpy()
        candidates = np.zeros(maps.shape, dtype=bool)
        _row_maxima_above(maps, threshold, edge, candidates[:, edge : rows - edge, edge : cols - edge])
        flat = maps.reshape(-1)
        index = np.flatnonzero(candidates)
        value = flat[index]
        keep = value >= flat[index + other_offsets[0]]
        for offset in other_offsets[1:]:
            keep &= value >= flat[index + offset]
        return torch.from_numpy(index[keep])
    candidates = torch.zeros(z.shape, dtype=torch.bool, device=z.device)
    _row_maxima_above(z, threshold, edge, candidates[:, edge : rows - edge, edge : cols - edge])
    flat = z.reshape(-1)
    index = torch.nonzero(candidates.reshape(-1)).squeeze(1)
    return index[(flat[index][:, None] >= flat[index[:, None] + torch.tensor(other_offsets, device=z.device)]).all(dim=1)]


def _row_maxima_above(maps, threshold: float, edge: int, out) -> None:
    """``out`` (the maps' interior, ``edge`` px in from every side) set to: above ``threshold`` and
    not below either neighbour in the same row. Works on numpy arrays and on torch tensors."""
    _, rows, cols, _ = maps.shape
    inner = maps[:, edge : rows - edge, edge : cols - edge]
    out[...] = inner > threshold
    out &= inner >= maps[:, edge : rows - edge, edge - 1 : cols - edge - 1]
    out &= inner >= maps[:, edge : rows - edge, edge + 1 : cols - edge + 1]


def _on_off_significance(on: torch.Tensor, off: torch.Tensor, alpha: float) -> torch.Tensor:
    """Li & Ma (1983, ApJ 272, 317, eq. 17) significance of ``on`` counts over a background measured as ``off``.

    ``on`` counts fall under the template, ``off`` in the annulus, whose area is ``1/alpha``
    times the template's. Unlike a known background, this accounts for the noise of the
    background estimate itself, which matters where the annulus holds only a few counts
    (a Gaussian or known-background statistic then calls stray counts 5σ peaks).
    """
    on = on.clamp_min(0)
    off = off.clamp_min(0)
    total = (on + off).clamp_min(1e-12)
    term_on = on * torch.log(((1 + alpha) / alpha) * on / total).nan_to_num(0.0)
    term_off = off * torch.log((1 + alpha) * off / total).nan_to_num(0.0)
    significance = torch.sqrt((2 * (term_on + term_off)).clamp_min(0))
    return torch.where(on > alpha * off, significance, -significance)


def _bin_factor(radius_px: float) -> int:
    """How many pixels of each axis the screen sums into one: the disk keeps a radius of at least one bin."""
    return 1 if radius_px < 1.5 else max(2, int(radius_px // 2))


def _bin(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Sum ``factor × factor`` blocks of a ``(n, rows, cols)`` stack (a ragged last block is dropped).

    Rows first, then columns: each step adds whole contiguous rows, which is several
    times faster than adding the ``factor²`` strided sub-grids.
    """
    if factor == 1:
        return x
    rows, cols = (x.shape[1] // factor) * factor, (x.shape[2] // factor) * factor
    out = x[:, 0:rows:factor, :cols]
    for i in range(1, factor):
        out = out + x[:, i:rows:factor, :cols]
    summed = out[..., 0::factor]
    for j in range(1, factor):
        summed = summed + out[..., j::factor]
    return summed


def _all_finite(x: torch.Tensor) -> bool:
    """Whether every value is finite (numpy's test is several times faster on the CPU)."""
    if x.device.type == "cpu":
        return bool(np.isfinite(x.numpy()).all())
    return bool(torch.isfinite(x).all())


def _edges_finite(x: torch.Tensor, factor: int) -> bool:
    """Whether the rows and columns that :func:`_bin` drops (a ragged last block) are all finite."""
    rows, cols = (x.shape[1] // factor) * factor, (x.shape[2] // factor) * factor
    return (rows == x.shape[1] or _all_finite(x[:, rows:])) and (cols == x.shape[2] or _all_finite(x[:, :, cols:]))


def _binned_template(template: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """The template binned like the data, centred on the middle bin of a ``shape`` frame.

    The template is first moved by ``(factor − 1)/2`` px so that its centre falls on the
    centre of a block: a correlation peak at bin ``i`` then means a disk centred at
    ``factor·i + (factor − 1)/2`` px.
    """
    centre = np.array(template.shape) // 2
    half = int(np.ceil(max(np.abs(np.argwhere(template > 0) - centre).max(initial=0), 1))) + factor
    small = template[centre[0] - half : centre[0] + half + 1, centre[1] - half : centre[1] + half + 1]
    small = ndimage.shift(small, ((factor - 1) / 2,) * 2, order=1, mode="constant")
    pad = (-half) % factor
    small = np.pad(small, ((pad, factor), (pad, factor)))
    blocks = small.shape[0] // factor
    binned = small[: blocks * factor, : blocks * factor].reshape(blocks, factor, blocks, factor).sum(axis=(1, 3))
    middle = (half + pad) // factor
    out = np.zeros(shape)
    top = shape[0] // 2 - middle, shape[1] // 2 - middle
    out[top[0] : top[0] + blocks, top[1] : top[1] + blocks] = binned
    return out


def _annulus_image(shape: tuple[int, int], inner: float, outer: float) -> np.ndarray:
    """A ring of ones around the middle pixel of a ``shape`` frame."""
    rows, cols = np.indices(shape)
    r = np.hypot(rows - shape[0] // 2, cols - shape[1] // 2)
    return ((r >= inner) & (r < outer)).astype(np.float64)


def _kernel_ft(kernel: np.ndarray, device: torch.device) -> torch.Tensor:
    """The conjugate FFT of a real kernel centred on the middle pixel: multiplying by it correlates."""
    centred = np.fft.ifftshift(kernel)
    return torch.as_tensor(np.conj(np.fft.fft2(centred)), dtype=torch.complex64, device=device)


def _correlate_pairs(x: torch.Tensor, kernels_ft: list[torch.Tensor]) -> list[torch.Tensor]:
    """Correlations of every image of ``x`` with each real kernel, two images per complex FFT.

    Packing image ``2i`` in the real and ``2i + 1`` in the imaginary part is exact because
    the kernels are real; it halves the transforms (and torch's inverse real FFT is slow).
    The results stay packed: ``(ceil(n / 2), rows, cols, 2)``, image ``2i + k`` at ``[i, ..., k]``
    (an odd stack gets a blank last image).
    """
    if x.shape[0] % 2:
        x = torch.cat([x, torch.zeros_like(x[:1])])
    spectrum = torch.fft.fft2(torch.complex(x[0::2], x[1::2]))
    return [torch.view_as_real(torch.fft.ifft2(spectrum * kernel_ft)) for kernel_ft in kernels_ft]


def _unpack(index: torch.Tensor, rows: int, cols: int):
    """Image, row and column of flat indices into a packed ``(n / 2, rows, cols, 2)`` stack."""
    return (index // (2 * rows * cols)) * 2 + index % 2, (index // (2 * cols)) % rows, (index // 2) % cols


def _parabola_offset(left: torch.Tensor, centre: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Vertex of the parabola through three equally spaced values, in steps from the middle (within ±½)."""
    curvature = left - 2 * centre + right
    ok = curvature < 0
    return torch.where(ok, 0.5 * (left - right) / torch.where(ok, curvature, -1.0), 0.0).clamp(-0.5, 0.5)


class _Screen:
    """Candidate disks of a binned stack: local maxima of the binned matched filter above a low threshold.

    The binned data are still counts, so the same on/off significance applies; the
    screen only decides where the full-resolution measurement looks.
    """

    def __init__(self, template: np.ndarray, radius_px: float, factor: int, shape: tuple[int, int], noise: str, device):
        self.factor = factor
        self.shape = (shape[0] // factor, shape[1] // factor)
        self.noise = noise
        self.edge = max(1, int(np.ceil(np.ceil(radius_px) / factor)))
        binned = _binned_template(template, factor, self.shape)
        binned /= binned.sum()
        inner = (radius_px + 2.0) / factor
        # at least one bin wide: a thinner ring can miss every bin centre (disks of 15 px binned by 7 did)
        annulus = _annulus_image(self.shape, inner, max((radius_px + 4.0) / factor, inner + 1.0))
        self.annulus_pixels = float(annulus.sum())
        self.excess_ft = _kernel_ft(binned - annulus / annulus.sum(), device)
        self.annulus_ft = _kernel_ft(annulus / annulus.sum(), device)
        self.n_eff = 1.0 / float((binned**2).sum())
        self.kernel_norm = float(np.sqrt(((binned - annulus / annulus.sum()) ** 2).sum()))

    def __call__(self, xb: torch.Tensor, threshold: float, keep: int):
        """Candidates of the binned stack ``xb``: ``(n, keep, 2)`` full-resolution centres and ``(n, keep)`` scores
        (−inf: none), and the robust spread of the binned excess per pattern (``noise="uniform"``; else None)."""
        kernels = [self.excess_ft, self.annulus_ft] if self.noise == "poisson" else [self.excess_ft]
        excess, *level = _correlate_pairs(xb, kernels)
        n, (_, rows, cols, _) = xb.shape[0], excess.shape
        if self.noise == "poisson":
            # (C − b) / sqrt(b / n_eff), with b never below one count per annulus; computed in place
            inverse_sd = level[0].clamp_min_(1.0 / self.annulus_pixels).rsqrt_()
            index = _local_maxima_above(inverse_sd.mul_(excess), threshold / np.sqrt(self.n_eff), self.edge)
            z = inverse_sd.reshape(-1)[index]  # (C − b) / sqrt(b) there
            surplus = excess.reshape(-1)[index]
            score = self._exact((surplus / z) ** 2, surplus)
            spread = None
        else:
            spread = self._spread(excess, n)
            scale = torch.nn.functional.pad(spread, (0, excess.shape[0] * 2 - n), value=1.0).reshape(-1, 1, 1, 2)
            index = _local_maxima_above(excess / scale, threshold, self.edge)
            score = excess.reshape(-1)[index] / spread[_unpack(index, rows, cols)[0]]
        above = score > threshold
        index, score = index[above], score[above]
        flat = excess.reshape(-1)
        dr = _parabola_offset(flat[index - 2 * cols], flat[index], flat[index + 2 * cols])
        dc = _parabola_offset(flat[index - 2], flat[index], flat[index + 2])
        f = self.factor
        b, r, c = _unpack(index, rows, cols)
        centres = torch.stack([f * (r + dr) + (f - 1) / 2, f * (c + dc) + (f - 1) / 2], dim=1)
        return _pad_per_pattern(b, centres, score, n, keep), spread

    def _exact(self, level: torch.Tensor, surplus: torch.Tensor) -> torch.Tensor:
        """Li & Ma significance of the binned template-weighted excess ``surplus`` over the annulus mean ``level``."""
        alpha = self.n_eff / self.annulus_pixels
        off = level * self.annulus_pixels
        return _on_off_significance(off * alpha + surplus * self.n_eff, off, alpha)

    @staticmethod
    def _spread(excess: torch.Tensor, n: int) -> torch.Tensor:
        """Robust spread (scaled median absolute deviation) of each of the ``n`` packed excess maps."""
        flat = excess.movedim(-1, 1).reshape(-1, excess.shape[1] * excess.shape[2])[:n]
        median = flat.median(dim=1, keepdim=True).values
        mad = (flat - median).abs().median(dim=1, keepdim=True).values * 1.4826
        return torch.maximum(mad, 1e-6 * flat.abs().amax(dim=1, keepdim=True).clamp_min(1e-30)).reshape(-1)


def _pad_per_pattern(b: torch.Tensor, centres: torch.Tensor, score: torch.Tensor, n: int, k: int):
    """The ``k`` strongest candidates of each pattern: ``(n, k, d)`` values, ``(n, k)`` scores (−inf: none)."""
    order = _by_pattern_strongest_first(b, score)
    b, centres, score = b[order], centres[order], score[order]
    counts = torch.bincount(b, minlength=n)
    rank = torch.arange(b.numel(), device=b.device) - (torch.cumsum(counts, 0) - counts)[b]
    keep = rank < k
    out_centres = torch.zeros((n, k, centres.shape[1]), dtype=centres.dtype, device=centres.device)
    out_score = torch.full((n, k), -torch.inf, dtype=score.dtype, device=score.device)
    out_centres[b[keep], rank[keep]] = centres[keep]
    out_score[b[keep], rank[keep]] = score[keep]
    return out_centres, out_score


def _by_pattern_strongest_first(b: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """The order that groups the candidates by pattern ``b`` (ascending), each pattern's strongest first,
    equal scores in their given order.

    For float32 scores that are all >= 0 (those above a positive threshold), one stable sort of
    an integer key: the pattern in the high bits, then the score's bits, which order such
    floats as their values do (reversed, for strongest first). The same order as a stable sort
    by score then by pattern, at a quarter of the time (2 ms per 256 patterns before).
    """
    if score.dtype == torch.float32 and bool((score >= 0).all()):
        bits = (score + 0.0).view(torch.int32).long()  # + 0.0 turns -0.0 into +0.0
        return torch.sort((b.long() << 32) | (0x7FFFFFFF - bits), stable=True).indices
    order = torch.sort(score, descending=True, stable=True).indices
    return order[torch.sort(b[order], stable=True).indices]


def _suppress_close(centres: torch.Tensor, score: torch.Tensor, spacing: float):
    """Sort each pattern's candidates by score and drop any within ``spacing`` px of a stronger one.

    ``centres`` is ``(n, k, d)`` with the position in the first two of ``d`` (the rest rides along).
    """
    score, order = score.sort(dim=1, descending=True)
    centres = centres.gather(1, order[..., None].expand_as(centres))
    k = score.shape[1]
    position = centres[..., :2].contiguous()
    close = torch.cdist(position, position, compute_mode="donot_use_mm_for_euclid_dist") < spacing
    stronger = torch.ones(k, k, dtype=torch.bool, device=score.device).tril(-1)
    close &= stronger[None] & torch.isfinite(score)[:, None, :]
    score = torch.where(close.any(-1), -torch.inf, score)
    score, order = score.sort(dim=1, descending=True)
    return centres.gather(1, order[..., None].expand_as(centres)), score


def _read_windows(x: torch.Tensor, b: torch.Tensor, origin: torch.Tensor, half: int):
    """``(m, (2 half + 1)²)`` square windows of ``x`` around the integer ``origin`` of each candidate.

    Windows inside the detector are copied out of a strided view of the stack; the few
    that cross its edge read the nearest edge pixel instead. Also returns which windows
    cross the edge and, for those, which of their pixels lie on the detector.
    """
    _, rows, cols = x.shape
    size = 2 * half + 1
    interior = (origin.min(dim=1).values >= half) & (origin[:, 0] < rows - half) & (origin[:, 1] < cols - half)
    top = torch.stack([(origin[:, 0] - half).clamp(0, rows - size), (origin[:, 1] - half).clamp(0, cols - size)], dim=1)
    if x.device.type == "cpu":  # numpy's fancy indexing of the strided view (torch's as_strided makes it cheaply)
        s0, s1, s2 = x.stride()
        view = x.as_strided((x.shape[0], rows - size + 1, cols - size + 1, size, size), (s0, s1, s2, s1, s2)).numpy()
        values = torch.from_numpy(view[b.numpy(), top[:, 0].numpy(), top[:, 1].numpy()].reshape(len(b), -1))
    else:
        view = x.unfold(1, size, 1).unfold(2, size, 1)
        values = view[b, top[:, 0], top[:, 1]].reshape(len(b), -1)
    edge = torch.nonzero(~interior).squeeze(1)
    if not len(edge):
        return values, edge, None
    steps = torch.arange(-half, half + 1, device=x.device)
    pr = origin[edge, 0, None] + steps
    pc = origin[edge, 1, None] + steps
    flat = (b[edge, None, None] * rows + pr.clamp(0, rows - 1)[:, :, None]) * cols + pc.clamp(0, cols - 1)[:, None, :]
    values[edge] = x.reshape(-1)[flat.reshape(len(pr), -1)]
    inside = ((pr >= 0) & (pr < rows))[:, :, None] & ((pc >= 0) & (pc < cols))[:, None, :]
    return values, edge, inside.reshape(len(pr), -1)


class _PeakFinder:
    """The per-block kernel: ``(n_y, n_x, ky, kx)`` counts -> ``(n_y, n_x, max_peaks + 1, 4)``.

    Rows ``:max_peaks`` hold (row, column, intensity, significance) of the peaks; the last
    row holds the direct beam's (row, column) when a ``beam`` finder is given.
    """

    def __init__(self, template, radius_px, spacing_px, threshold, max_peaks, subpixel, noise, device, beam=None):
        self.shape = template.shape
        self.beam = beam
        self.device = torch.device(device)
        self.radius_px = float(radius_px)
        self.spacing = max(1.0, float(spacing_px))
        self.threshold = float(threshold)
        self.max_peaks = int(max_peaks)
        # a disk narrower than this is too coarsely sampled for a shifted template (errors of a
        # few hundredths of a pixel at r < 2 px, up to 0.01 px at 2-2.5 px, which high-dose strain
        # fits feel); its centroid is then the better estimate
        self.subpixel = "com" if subpixel == "fit" and self.radius_px < MIN_FIT_RADIUS_PX else subpixel
        self.noise = noise
        self.edge = int(np.ceil(self.radius_px))
        factor = _bin_factor(self.radius_px)
        self.screen = _Screen(template, self.radius_px, factor, self.shape, noise, self.device)
        self.half = int(np.ceil(self.radius_px + 4.0))  # the window holds the annulus and the shifted template
        self._window_stencils()
        self.fitter = TemplateFit(template, self.radius_px, self.half, self.device, design=self.design)
        self.projection = torch.cat([self.plane_pinv.T, self.fitter.basis], dim=1)  # (K, 3 + L)
        # counts: weak disks get a step of the Poisson likelihood from the fit's (or centroid's) centre
        counted = noise == "poisson" and self.subpixel != "none"
        self.likelihood = PoissonStep(template, self.radius_px, self.half, self.design, self.device) if counted else None
        if noise == "uniform":  # spread of the full-resolution excess per spread of the binned one (white noise)
            kernel_norm = np.sqrt(1.0 / self.fitter.n_eff + 1.0 / self.annulus_pixels)
            self.uniform_scale = kernel_norm / (factor * self.screen.kernel_norm)

    def _window_stencils(self) -> None:
        """Within a window: the background annulus and its plane fit, the disk, and the window's pixel offsets."""
        size = 2 * self.half + 1
        dy, dx = (a.ravel() for a in np.mgrid[-self.half : self.half + 1, -self.half : self.half + 1])
        distance = np.hypot(dy, dx)
        ring = (distance >= self.radius_px + 2.0) & (distance < self.radius_px + 4.0)
        self.annulus_pixels = float(ring.sum())
        design = np.stack([np.ones(size * size), dy, dx], axis=1)
        pinv = np.zeros((3, size * size))
        pinv[:, ring] = np.linalg.solve(design[ring].T @ design[ring], design[ring].T)
        as_tensor = lambda a, **kw: torch.as_tensor(a, device=self.device, **kw)  # noqa: E731
        self.plane_pinv = as_tensor(pinv, dtype=torch.float32)  # (3, K): the annulus plane's coefficients
        self.design = as_tensor(design, dtype=torch.float32)  # (K, 3)
        disk = np.flatnonzero(distance <= self.radius_px + 1.0)
        self.disk = as_tensor(disk)
        self.disk_offsets = as_tensor(np.stack([dy[disk], dx[disk]], axis=1))
        # the centroid (subpixel="com") weighs only pixels within radius + 2 px, and the intensity's disk
        # (radius + 1 px, moved by at most one pixel) lies within the same square: the excess is needed there only
        reach = min(self.half, int(np.floor(self.radius_px + 2.0)))
        inner = np.flatnonzero((np.abs(dy) <= reach) & (np.abs(dx) <= reach))
        self.inner = as_tensor(inner)
        self.inner_size = 2 * reach + 1
        self.inner_design = as_tensor(design[inner], dtype=torch.float32)  # (J, 3)
        self.inner_steps = as_tensor(np.arange(-reach, reach + 1), dtype=torch.float32)
        self.inner_weighted = as_tensor(distance[inner] <= self.radius_px + 2.0)
        self.inner_disk = as_tensor((dy[disk] + reach) * self.inner_size + dx[disk] + reach)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        lead = block.shape[:2]
        patterns = np.asarray(block, dtype=np.float32).reshape(-1, *self.shape)
        out = np.full((patterns.shape[0], self.max_peaks + 1, len(FIELDS)), np.nan, dtype=np.float32)
        elements = CPU_BLOCK_ELEMENTS if self.device.type == "cpu" else BATCH_ELEMENTS
        batch = max(1, elements // (self.shape[0] * self.shape[1]))
        for start in range(0, patterns.shape[0], batch):
            out[start : start + batch] = self._batch(patterns[start : start + batch])
        return out.reshape(*lead, self.max_peaks + 1, len(FIELDS))

    @torch.no_grad()
    def _batch(self, patterns: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(patterns, device=self.device)
        binned = _bin(x, self.screen.factor)
        # a NaN or infinity in a pattern makes its bin's sum one too: check the 4× smaller binned stack
        # (the few pixels of a ragged edge that binning drops are checked on their own)
        if not (_all_finite(binned) and _edges_finite(x, self.screen.factor)):
            patterns = np.nan_to_num(patterns, nan=0.0, posinf=0.0, neginf=0.0)
            x = torch.as_tensor(patterns, device=self.device)
            binned = _bin(x, self.screen.factor)
        threshold = SCREEN_FRACTION * self.threshold
        (starts, screen_score), spread = self.screen(binned, threshold, 2 * self.max_peaks)
        result = torch.full((x.shape[0], self.max_peaks + 1, len(FIELDS)), float("nan"))
        b, slot = torch.isfinite(screen_score).nonzero(as_tuple=True)
        if b.numel():
            centres, score, intensity = self._measure(x, b, starts[b, slot], spread)
            centres, score, intensity = self._select(x.shape[0], b, centres, score, intensity)
            found = torch.isfinite(score)
            result[:, : self.max_peaks, :2] = torch.where(found[..., None], centres, torch.nan)
            result[:, : self.max_peaks, 2] = torch.where(found, intensity, torch.nan)
            result[:, : self.max_peaks, 3] = torch.where(found, score, torch.nan)
        if self.beam is not None:
            beam = torch.as_tensor(self.beam(patterns, result[:, : self.max_peaks, :3]), dtype=result.dtype)
            result[:, self.max_peaks, :2] = beam
            if self.subpixel != "none":
                _snap_to_beam(result[:, : self.max_peaks, :2], beam, self.radius_px / 2)
        return result.cpu().numpy()

    def _measure(self, x, b, starts, spread):
        """Refined centre, significance and integrated intensity of each candidate (flat lists).

        Each candidate's window is read once. A background plane is fitted to its annulus
        (one precomputed pseudo-inverse); the centre is refined on the excess over that
        plane; a candidate whose best shift lies at the bank's limit is measured again
        around that shift.
        """
        low = torch.tensor([self.edge, self.edge], device=x.device)
        high = torch.tensor([self.shape[0] - 1 - self.edge, self.shape[1] - 1 - self.edge], device=x.device)
        origin = torch.round(starts).long().clamp(low, high)
        *measured, again = self._measure_windows(x, b, origin, spread)
        if bool(again.any()):
            moved = torch.round(measured[0][again]).long().clamp(low, high)
            repeat = self._measure_windows(x, b[again], moved, spread)
            for value, new in zip(measured, repeat):
                value[again] = new
        return measured

    def _measure_windows(self, x, b, origin, spread):
        """Centre, significance, intensity and whether to look again, for windows around ``origin``.

        The background plane is subtracted inside the products (``(V − P D) B = V B − P (D B)``)
        rather than from every window pixel; pixels off the detector are given the plane's
        value, so that they carry no excess.
        """
        values, edge, inside = _read_windows(x, b, origin, self.half)
        # one pass over the windows: the annulus plane (level and slopes) and the template's components
        projected = values @ self.projection
        plane, components = projected[:, :3], projected[:, 3:]
        if len(edge):
            values[edge] = torch.where(inside, values[edge], plane[edge] @ self.design.T)
            components[edge] = values[edge] @ self.fitter.basis
        components = components - plane @ self.fitter.design_basis
        excess = None
        if self.subpixel == "com":
            excess = values[:, self.inner] - plane @ self.inner_design.T  # (m, J): the square that matters
            offset = _windowed_centroid(excess, self.inner_steps, self.inner_weighted, self.radius_px)
            _, weighted, _ = self.fitter.fit_components(components, integer=True)
            again = torch.zeros(len(values), dtype=torch.bool, device=values.device)
        else:
            offset, weighted, again = self.fitter.fit_components(components, integer=self.subpixel == "none")
        level = plane[:, 0] + (plane[:, 1:] * offset).sum(-1)  # the plane under the template's centre
        significance = self._significance(weighted + level, level, spread, b)
        if self.likelihood is not None:
            offset = self._likelihood_step(values, plane, offset, weighted, level, significance)
        pixel = torch.round(offset).long().clamp(-1, 1)
        return origin.float() + offset, significance, self._intensity(values, excess, plane, pixel), again

    def _likelihood_step(self, values, plane, offset, weighted, level, significance):
        """Offsets after the Poisson-likelihood step (:class:`PoissonStep`) for the candidates it helps.

        Those above the threshold (the others are dropped) whose template-weighted height is
        at least ``LIKELIHOOD_CONTRAST`` times the background under them: where the background
        dominates, every pixel has nearly the same variance, least squares is already the
        likelihood's answer and the step costs time for nothing (the lattice benchmark at 1e6
        electrons, whose weak disks sit on a 30 % background, kept its RMS to the 4th decimal).
        """
        chosen = (significance > self.threshold) & (weighted > LIKELIHOOD_CONTRAST * level.clamp_min(0))
        chosen = torch.nonzero(chosen).squeeze(1)
        if len(chosen):
            amplitude = weighted[chosen] * self.fitter.n_eff  # the template (unit sum) times this has that height
            offset[chosen] = self.likelihood(values, chosen, plane[chosen], offset[chosen], amplitude)  # offset is ours
        return offset

    def _intensity(self, values, excess, plane, pixel):
        """Excess over the plane summed over the disk (radius + 1 px) around the window pixel ``pixel``."""
        if excess is not None:  # over the inner square (see _window_stencils)
            return excess.gather(1, self.inner_disk[None] + (pixel[:, :1] * self.inner_size + pixel[:, 1:])).sum(-1)
        size = 2 * self.half + 1
        index = self.disk[None] + (pixel[:, :1] * size + pixel[:, 1:])
        # the disk is symmetric about its pixel, so the plane sums to n · plane(pixel) over it
        under = plane[:, 0] + (plane[:, 1:] * pixel.float()).sum(-1)
        return values.gather(1, index).sum(-1) - len(self.disk) * under

    def _significance(self, on, level, spread, b):
        """Significance of the template-weighted mean ``on`` over the background ``level`` from the annulus."""
        if self.noise == "poisson":
            n_eff = self.fitter.n_eff
            off = level.clamp_min(0) * self.annulus_pixels
            return _on_off_significance(on.clamp_min(0) * n_eff, off, n_eff / self.annulus_pixels)
        return (on - level) / (spread[b] * self.uniform_scale)

    def _select(self, n, b, centres, score, intensity):
        """Per pattern: the candidates above threshold, none within ``spacing`` of a stronger one, strongest first."""
        above = score > self.threshold
        values = torch.cat([centres, intensity[:, None]], dim=1)[above]
        counts = torch.bincount(b[above], minlength=n)
        k = max(1, int(counts.max()) if counts.numel() else 0)
        values, score = _pad_per_pattern(b[above], values, score[above], n, k)
        values, score = _suppress_close(values, score, self.spacing)
        pad = self.max_peaks - k
        if pad > 0:
            values = torch.nn.functional.pad(values, (0, 0, 0, pad))
            score = torch.nn.functional.pad(score, (0, pad), value=-torch.inf)
        values, score = values[:, : self.max_peaks], score[:, : self.max_peaks]
        return values[..., :2], score, values[..., 2]


class _BeamFinder:
    """The direct beam of each pattern, as :func:`beam_position` (``method="com"``) finds it, from the peaks.

    ``beam_position`` starts its centre of mass at the brightest beam-sized region within
    four beam radii of the beam in the reference image; here the start is the found peak
    there with the largest integrated intensity, which saves filtering the patterns again.
    """

    def __init__(self, reference: np.ndarray, radius_px: float):
        self.radius_px = float(radius_px)
        self.centre, self.search = (torch.as_tensor(a, dtype=torch.float32) for a in beam_kernel_start(reference, radius_px))

    def __call__(self, patterns: np.ndarray, peaks: torch.Tensor) -> np.ndarray:
        """``(n, 2)`` beam (row, column) of ``patterns`` from their ``(n, k, 3)`` peaks (row, column, intensity)."""
        distance = torch.linalg.vector_norm(peaks[..., :2] - self.centre, dim=-1)
        inside = torch.isfinite(peaks[..., 2]) & (distance <= self.search)
        best = torch.where(inside, peaks[..., 2], -torch.inf).argmax(dim=1)
        start = peaks[torch.arange(len(peaks)), best, :2].double().numpy()
        found = inside.any(dim=1).numpy()
        start = np.where(found[:, None], start, 0.0)
        return np.where(found[:, None], _centre_of_mass(patterns, start, self.radius_px), np.nan)


def _snap_to_beam(centres: torch.Tensor, beam: torch.Tensor, tolerance: float) -> None:
    """Give the peak within ``tolerance`` px of each pattern's direct beam the beam's measured position.

    The beam finder's centre of mass over the whole bright disk is more precise for it than
    the template fit (whose sub-pixel shifts of a sampled disk are good to a few thousandths
    of a pixel, which only matters for a disk this bright), and the direct beam then sits
    exactly at k = 0.
    """
    distance = torch.linalg.vector_norm(centres - beam[:, None, :], dim=-1).nan_to_num(torch.inf)
    nearest = distance.argmin(dim=1)
    rows = torch.arange(len(centres))
    hit = (distance[rows, nearest] <= tolerance) & torch.isfinite(beam).all(dim=1)
    centres[rows[hit], nearest[hit]] = beam[hit]


def _windowed_centroid(excess, steps, weighted, radius_px: float, iterations: int = REFINE_ITERATIONS):
    """The fixed point of a Gaussian-windowed centre of mass of the excess (``subpixel="com"``).

    ``excess`` holds square windows (rows, then columns) whose pixels lie ``steps`` px from
    the centre pixel along each axis; only the pixels where ``weighted`` is true (within
    ``radius_px + 2`` px of it) count. Each iteration weighs every window by the outer
    product of its two 1-D Gaussians and takes the weighted sums of 1, y and x with one
    matrix product shared by all windows (batched products of many tiny matrices instead
    took twice as long).
    """
    size = len(steps)
    windows = torch.where(weighted, excess, 0.0)  # (m, size²)
    ones = torch.ones(size * size, device=excess.device)
    moments = torch.stack([ones, steps.repeat_interleave(size), steps.repeat(size)], dim=1)  # (size², 3): 1, y, x
    offset = torch.zeros((excess.shape[0], 2), device=excess.device)
    scale = -1.0 / (2 * (1.2 * radius_px + 0.5) ** 2)
    for _ in range(iterations):
        gaussians = torch.exp((steps - offset[:, :, None]).square_().mul_(scale))  # (m, 2, size): along y, along x
        weights = (gaussians[:, 0, :, None] * gaussians[:, 1, None, :]).reshape(len(windows), -1)
        sums = weights.mul_(windows) @ moments  # (m, 3): Σ w e, Σ w y e, Σ w x e
        total = sums[:, :1]
        ok = total > 0
        offset = torch.where(ok, (sums[:, 1:] / torch.where(ok, total, 1.0)).clamp(-radius_px, radius_px), offset)
    return offset
