"""Inverse-pole-figure (IPF) colours of orientations, and the colour key as an image.

An IPF map colours each pattern by the crystal direction that lies along a chosen lab
direction (by default the beam, +z: "IPF-Z"). With ``g_lab = R @ g_crystal`` (DESIGN.md)
that crystal direction is ``Rᵀ @ d_lab``. It is brought into the fundamental sector of the
crystal's Laue class (the symmetry of directions: the proper rotations and inversion) and
coloured with the TSL key of Nolze & Hielscher (2016), the key of EDAX TSL, MTEX and orix:

- the hue is the azimuth about the sector's centre, measured from the [001] corner and
  re-parametrised so that the three corners sit at hues 0, 1/3 and 2/3 (red, green, blue;
  for m-3m [001] red, [101] green, [111] blue);
- the lightness falls from 1 (white) at the centre to 1/2 (full colour) on the sector's
  boundary, in proportion to the angular distance along the great circle from the centre.

Sectors are those of MTEX/orix for the nine Laue classes whose principal axis is z:
m-3m, m-3, 6/mmm, 6/m, -3m, -3, 4/mmm, 4/m and mmm, in stemkit's standard setting
(:data:`stemkit.physics.symmetry.LAUE_GENERATORS`: a ∥ x, c* ∥ z, 2-folds of the trigonal
and hexagonal classes along a). Tests compare the colours with orix's ``IPFColorKeyTSL``.

Reference: G. Nolze and R. Hielscher, J. Appl. Cryst. 49 (2016) 1786-1802.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike, NDArray

from stemkit.physics.crystal import Crystal
from stemkit.physics.rotations import quaternion_to_matrix
from stemkit.physics.symmetry import PointGroup

__all__ = ["IPF_LAUE_CLASSES", "ipf_colors", "ipf_key_image", "ipf_sector"]

#: Laue classes with an IPF colour key (standard setting).
IPF_LAUE_CLASSES = ("m-3m", "m-3", "6/mmm", "6/m", "-3m", "-3", "4/mmm", "4/m", "mmm")

_HEXAGONAL_FAMILY = ("6/mmm", "6/m", "-3m", "-3")
_AZIMUTH_SAMPLES = 7200  # samples of the sector's boundary distance for the hue re-parametrisation
_INSIDE_TOLERANCE = 1e-9


@dataclass(frozen=True, eq=False)
class IPFSector:
    """The fundamental sector of directions of a Laue class, with what the TSL key needs.

    Attributes
    ----------
    laue
        Laue-class name.
    normals
        Unit normals (k, 3) of the bounding great circles; inside means ``normals @ v >= 0``.
    vertices
        Unit corner directions (m, 3), [001] first, then by increasing azimuth about the centre.
    labels
        Miller (four-index for the hexagonal family) labels of the corners.
    center
        Unit centre direction of the sector.
    hue_grid, hue_values
        The hue (in [0, 1]) as a function of the raw azimuth about the centre (radians).
    """

    laue: str
    normals: NDArray[np.float64]
    vertices: NDArray[np.float64]
    labels: tuple[str, ...]
    center: NDArray[np.float64]
    hue_grid: NDArray[np.float64]
    hue_values: NDArray[np.float64]

    def contains(self, directions: NDArray[np.float64], tolerance: float = _INSIDE_TOLERANCE) -> NDArray[np.bool_]:
        """Whether unit directions (..., 3) lie inside the sector (boundary included)."""
        return np.all(directions @ self.normals.T >= -tolerance, axis=-1)

    def frame(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Unit tangents ``(rx, ry)`` at the centre: rx towards [001], ry = centre × rx."""
        z = np.array([0.0, 0.0, 1.0])
        rx = z - (z @ self.center) * self.center
        rx /= np.linalg.norm(rx)
        return rx, np.cross(self.center, rx)


def _unit(v: NDArray[np.float64]) -> NDArray[np.float64]:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _in_plane(azimuth_deg: float) -> NDArray[np.float64]:
    angle = np.deg2rad(azimuth_deg)
    return np.array([np.cos(angle), np.sin(angle), 0.0])


def _sector_normals(laue: str, proper_order: int) -> NDArray[np.float64]:
    """The bounding normals of MTEX's sector for ``laue`` (standard setting)."""
    if laue == "m-3m":  # 0 <= y <= x <= z: the [001]-[101]-[111] triangle
        return _unit(np.array([[1.0, -1.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    if laue == "m-3":  # 0 <= x, y <= z
        return _unit(np.array([[1.0, 0, 0], [0, -1.0, 1.0], [-1.0, 0, 1.0], [0, 1.0, 0], [0, 0, 1.0]]))
    # Upper hemisphere, and a wedge of 360°/order about z starting at +x (at -30° for -3m).
    wedge = 360.0 / proper_order
    offset = -30.0 if laue == "-3m" else 0.0
    normals = [np.array([0.0, 0.0, 1.0]), _in_plane(90.0 + offset), _in_plane(wedge - 90.0 + offset)]
    return np.unique(np.round(np.stack(normals), 12) + 0.0, axis=0)


def _sector_vertices(normals: NDArray[np.float64]) -> NDArray[np.float64]:
    """Corners: intersections of pairs of bounding circles that lie inside every half-space."""
    candidates = []
    for i in range(len(normals)):
        for j in range(i + 1, len(normals)):
            cross = np.cross(normals[i], normals[j])
            if np.linalg.norm(cross) > 1e-9:
                candidates += [_unit(cross), -_unit(cross)]
    points = np.stack(candidates)
    inside = points[np.all(points @ normals.T >= -1e-9, axis=1)]
    return np.unique(np.round(inside, 9) + 0.0, axis=0)


def _spherical_centroid(normals: NDArray[np.float64]) -> NDArray[np.float64]:
    """Normalised mean of directions spread evenly (Fibonacci lattice) over the sector."""
    n = 400_000
    index = np.arange(n) + 0.5
    z = 1 - 2 * index / n
    phi = np.pi * (1 + 5**0.5) * index
    r = np.sqrt(1 - z**2)
    points = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)
    inside = points[np.all(points @ normals.T >= 0, axis=1)]
    return _unit(inside.mean(axis=0))


def _azimuth(directions: NDArray[np.float64], center: NDArray[np.float64], rx: NDArray[np.float64],
             ry: NDArray[np.float64]) -> NDArray[np.float64]:
    """Azimuth (radians, [0, 2π)) of directions about the centre, 0 towards [001]; 0 at the centre."""
    offset = directions - center
    azimuth = np.mod(np.arctan2(offset @ ry, offset @ rx), 2 * np.pi)
    return np.where(np.linalg.norm(offset, axis=-1) < 1e-12, 0.0, azimuth)


def _boundary_distance(center: NDArray[np.float64], tangents: NDArray[np.float64],
                       normals: NDArray[np.float64]) -> NDArray[np.float64]:
    """Angle from the centre to the sector's boundary along the great circle of each unit tangent."""
    # The point cosθ·c + sinθ·t meets the circle of normal n where tanθ = -(c·n)/(t·n), θ in (0, π).
    angles = np.arctan2(np.broadcast_to(center @ normals.T, (len(tangents), len(normals))), -(tangents @ normals.T))
    return angles.min(axis=1)


def _hue_curve(center: NDArray[np.float64], vertices: NDArray[np.float64], normals: NDArray[np.float64],
               rx: NDArray[np.float64], ry: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Hue as a function of raw azimuth: each arc between corners gets a third of the colour circle.

    Within an arc the hue grows with the integral of the boundary distance over azimuth
    (MTEX's correction, which puts pure blue at [111] for m-3m rather than opposite the
    [001]-[101] edge); without exactly three corners the whole circle is one arc.
    """
    corners = _azimuth(vertices, center, rx, ry)
    edges = np.append(np.sort(np.where(corners > 2 * np.pi - 1e-6, 0.0, corners)), 2 * np.pi)
    grid = np.union1d(np.linspace(0.0, 2 * np.pi, _AZIMUTH_SAMPLES + 1), edges)  # corners exactly on the grid
    tangents = np.cos(grid)[:, None] * rx + np.sin(grid)[:, None] * ry
    distance = _boundary_distance(center, tangents, normals)
    cumulative = np.concatenate([[0.0], np.cumsum((distance[1:] + distance[:-1]) / 2 * np.diff(grid))])
    if len(vertices) != 3:
        return grid, cumulative / cumulative[-1]
    at_edges = np.interp(edges, grid, cumulative)
    arc = np.clip(np.searchsorted(edges, grid, side="right") - 1, 0, 2)
    hue = (arc + (cumulative - at_edges[arc]) / (at_edges[arc + 1] - at_edges[arc])) / 3
    return grid, hue


def _direction_label(direction: NDArray[np.float64], hexagonal: bool) -> str:
    """Smallest-integer label of a corner direction: [uvw], or [uvtw] for the hexagonal family."""
    if hexagonal:  # Cartesian → three-index [UVW] on a1 = x, a2 = (-1/2, √3/2), then [uvtw]
        basis = np.array([[1.0, -0.5, 0.0], [0.0, np.sqrt(3) / 2, 0.0], [0.0, 0.0, 1.0]])
        u3, v3, w3 = np.linalg.solve(basis, direction)
        index = np.array([2 * u3 - v3, 2 * v3 - u3, -(u3 + v3), 3 * w3])
    else:
        index = np.asarray(direction, dtype=float)
    nonzero = np.abs(index[np.abs(index) > 1e-6])
    index = np.round(index / nonzero.min()).astype(int)
    common = np.gcd.reduce(np.abs(index[index != 0]))
    return "[" + "".join(str(int(i)) if i >= 0 else f"-{-int(i)}" for i in index // common) + "]"


@lru_cache(maxsize=None)
def ipf_sector(laue: str) -> IPFSector:
    """The fundamental sector of directions of a Laue class (standard setting), cached.

    Parameters
    ----------
    laue
        One of :data:`IPF_LAUE_CLASSES`.
    """
    if laue not in IPF_LAUE_CLASSES:
        raise ValueError(f"no IPF colour key for Laue class {laue!r}; supported: {list(IPF_LAUE_CLASSES)} "
                         "(monoclinic and triclinic crystals have none yet)")
    group = PointGroup.from_name(laue)
    normals = _sector_normals(laue, group.order)
    vertices = _sector_vertices(normals)
    center = _unit(vertices.mean(axis=0)) if len(vertices) == 3 else _spherical_centroid(normals)
    sector = IPFSector(laue, normals, vertices, (), center, np.zeros(0), np.zeros(0))
    rx, ry = sector.frame()
    corner_azimuth = _azimuth(vertices, center, rx, ry)
    vertices = vertices[np.argsort(np.where(corner_azimuth > 2 * np.pi - 1e-6, 0.0, corner_azimuth))]
    labels = tuple(_direction_label(v, laue in _HEXAGONAL_FAMILY) for v in vertices)
    grid, hue = _hue_curve(center, vertices, normals, rx, ry)
    return IPFSector(laue, normals, vertices, labels, center, grid, hue)


def _as_standard_group(point_group: PointGroup | Crystal | str) -> PointGroup:
    """The point group, checked to be in the standard setting the IPF sectors are defined in."""
    group = PointGroup.from_name(point_group) if isinstance(point_group, str) else point_group
    group = group.point_group if isinstance(group, Crystal) else group
    if not isinstance(group, PointGroup):
        raise TypeError(f"point_group must be a stemkit PointGroup, a Crystal or a Laue-class name such as 'm-3m'; "
                        f"got {type(point_group).__name__}")
    if group.name not in IPF_LAUE_CLASSES:
        raise ValueError(f"no IPF colour key for Laue class {group.name!r}; supported: {list(IPF_LAUE_CLASSES)}")
    standard = PointGroup.from_name(group.name)
    distance = np.abs(group.rotations[:, None] - standard.rotations[None]).max(axis=(2, 3))
    if len(group.rotations) != len(standard.rotations) or distance.min(axis=1).max() > 1e-6:
        raise ValueError(f"the point group {group.name} is not in the standard setting (a ∥ x, c* ∥ z, 2-folds "
                         "along a) for which the IPF key is defined; describe the crystal in that setting")
    return group


def _into_sector(directions: NDArray[np.float64], group: PointGroup, sector: IPFSector) -> NDArray[np.float64]:
    """The symmetry-equivalent of each unit direction (n, 3) that lies in the sector (closest to its centre)."""
    proper = np.einsum("sij,nj->nsi", group.rotations, directions)
    images = np.concatenate([proper, -proper], axis=1)  # inversion: Friedel's law, the Laue class
    score = (images @ sector.center) + 10.0 * sector.contains(images, 1e-9)
    return images[np.arange(len(directions)), np.argmax(score, axis=1)]


def _hsl_to_rgb(hue: NDArray[np.float64], lightness: NDArray[np.float64]) -> NDArray[np.float64]:
    """RGB (..., 3) of fully saturated HSL colours (hue in [0, 1), lightness in [0, 1])."""
    amplitude = np.minimum(lightness, 1 - lightness)[..., None]
    k = np.mod(np.array([0.0, 8.0, 4.0]) + 12 * hue[..., None], 12)
    return lightness[..., None] - amplitude * np.clip(np.minimum(k - 3, 9 - k), -1, 1)


def direction_colors(directions: NDArray[np.float64], group: PointGroup, sector: IPFSector) -> NDArray[np.float64]:
    """TSL colours (n, 3) of crystal directions (n, 3), any length, in the crystal's Cartesian frame."""
    h = _into_sector(_unit(directions), group, sector)
    center = sector.center
    rx, ry = sector.frame()
    hue = np.interp(_azimuth(h, center, rx, ry), sector.hue_grid, sector.hue_values)
    # Forward boundary point of each bounding circle along the great circle from the centre through h.
    c_dot_n, h_dot_n = center @ sector.normals.T, h @ sector.normals.T
    forward = h[:, None, :] * c_dot_n[None, :, None] - center[None, None, :] * h_dot_n[:, :, None]
    norm = np.linalg.norm(forward, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        forward = forward / norm
        to_boundary = np.arctan2(np.linalg.norm(np.cross(h[:, None], forward), axis=-1),
                                 np.sum(h[:, None] * forward, axis=-1))
        centre_to_boundary = np.arctan2(np.linalg.norm(np.cross(center, forward), axis=-1), forward @ center)
        ratio = to_boundary / centre_to_boundary
    ratio = np.where(norm[..., 0] < 1e-12, 1.0, ratio)  # h at the centre
    lightness = 0.5 + np.clip(ratio.min(axis=1), 0.0, 1.0) / 2
    return np.clip(_hsl_to_rgb(hue, lightness), 0.0, 1.0)


def ipf_colors(quaternions: ArrayLike, point_group: PointGroup | Crystal | str,
               direction: ArrayLike = (0.0, 0.0, 1.0)) -> NDArray[np.float64]:
    """IPF colours (TSL key) of the crystal direction along a lab direction, for each orientation.

    Parameters
    ----------
    quaternions
        Orientations (..., 4), (w, x, y, z), crystal → lab (DESIGN.md). Rows with a NaN
        (no answer) get NaN colours.
    point_group
        The crystal, its symmetry (:attr:`stemkit.physics.Crystal.point_group`) or a Laue-class
        name; one of :data:`IPF_LAUE_CLASSES`, in the standard setting.
    direction
        The lab direction to colour (x along kx, y along ky, z the beam); default the beam (IPF-Z).

    Returns
    -------
    numpy.ndarray
        RGB in [0, 1], shape (..., 3); NaN where the quaternion is NaN
        (``numpy.nan_to_num(colors)`` shows those black).

    Examples
    --------
    >>> ipf_colors([1.0, 0.0, 0.0, 0.0], "m-3m").round(6) + 0.0  # [001] along the beam: red
    array([1., 0., 0.])
    """
    q = np.asarray(quaternions, dtype=float)
    if q.shape[-1:] != (4,):
        raise ValueError(f"quaternions must have a last axis of length 4 (w, x, y, z); got shape {q.shape}")
    lab = np.asarray(direction, dtype=float)
    if lab.shape != (3,) or not np.linalg.norm(lab) > 0:
        raise ValueError(f"direction must be a non-zero lab vector (x, y, z); got {direction!r}")
    group = _as_standard_group(point_group)
    sector = ipf_sector(group.name)
    flat = q.reshape(-1, 4)
    valid = np.all(np.isfinite(flat), axis=1)
    colors = np.full((len(flat), 3), np.nan)
    if valid.any():
        crystal_directions = np.einsum("nji,j->ni", quaternion_to_matrix(flat[valid]), lab / np.linalg.norm(lab))
        colors[valid] = direction_colors(crystal_directions, group, sector)
    return colors.reshape(*q.shape[:-1], 3)


def _stereographic(v: NDArray[np.float64]) -> NDArray[np.float64]:
    """Stereographic projection (from the south pole) of unit directions of the upper hemisphere."""
    return v[..., :2] / (1 + v[..., 2:3])


def _inverse_stereographic(xy: NDArray[np.float64]) -> NDArray[np.float64]:
    r2 = np.sum(xy**2, axis=-1, keepdims=True)
    return np.concatenate([2 * xy, 1 - r2], axis=-1) / (1 + r2)


def _sector_extent(sector: IPFSector) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Lower and upper corners (x, y) of the sector's stereographic bounding box."""
    n = 200_000
    index = np.arange(n) + 0.5
    z = 1 - index / n  # upper hemisphere, evenly spread
    phi = np.pi * (1 + 5**0.5) * index
    r = np.sqrt(1 - z**2)
    points = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)
    xy = _stereographic(np.concatenate([points[sector.contains(points, 0.0)], sector.vertices]))
    return xy.min(axis=0), xy.max(axis=0)


def ipf_key_image(point_group: PointGroup | Crystal | str, size: int = 256) -> xr.DataArray:
    """The IPF colour key: the fundamental sector in stereographic projection, coloured as :func:`ipf_colors`.

    Parameters
    ----------
    point_group
        The crystal, its symmetry or a Laue-class name (one of :data:`IPF_LAUE_CLASSES`).
    size
        Pixels along the longer side of the image.

    Returns
    -------
    xarray.DataArray
        RGBA in [0, 1], dims ``("y", "x", "channel")`` (channels R, G, B, A; alpha 0 and
        colour 1 outside the sector), ``y`` decreasing down the rows as in an image, ``x``
        and ``y`` the stereographic coordinates. ``attrs``: ``corner_labels`` (e.g. ``[001]``,
        ``[101]``, ``[111]``), ``corner_x``, ``corner_y`` (their stereographic coordinates),
        ``corner_directions`` (crystal-frame unit vectors, flattened by 3), ``point_group``.
    """
    if int(size) < 8:
        raise ValueError(f"size must be at least 8 pixels; got {size}")
    group = _as_standard_group(point_group)
    sector = ipf_sector(group.name)
    low, high = _sector_extent(sector)
    step = float(np.max(high - low)) / (int(size) - 1)
    x = low[0] + step * np.arange(int(np.floor((high[0] - low[0]) / step + 1e-9)) + 1)
    y = high[1] - step * np.arange(int(np.floor((high[1] - low[1]) / step + 1e-9)) + 1)
    xy = np.stack(np.meshgrid(x, y), axis=-1).reshape(-1, 2)
    directions = _inverse_stereographic(xy)
    inside = sector.contains(directions, 1e-6)
    rgba = np.ones((len(xy), 4))
    rgba[inside, :3] = direction_colors(directions[inside], group, sector)
    rgba[~inside, 3] = 0.0
    corners = _stereographic(sector.vertices)
    return xr.DataArray(
        rgba.reshape(len(y), len(x), 4),
        dims=("y", "x", "channel"),
        coords={"y": y, "x": x, "channel": ["R", "G", "B", "A"]},
        name="ipf_key",
        attrs={"point_group": group.name, "projection": "stereographic from the south pole, crystal frame",
               "color_key": "TSL (Nolze & Hielscher 2016)", "corner_labels": list(sector.labels),
               "corner_x": corners[:, 0].tolist(), "corner_y": corners[:, 1].tolist(),
               "corner_directions": sector.vertices.ravel().tolist()},
    )
