"""Built-in crystals: Cu, Au, Al, Ni, Si, Cu2O, 2H-MoS2, 2H-WS2, 2H-WSe2, graphene, hBN.

Lattice parameters are room-temperature literature values; Debye–Waller factors B are
approximate room-temperature values (Å²), good to perhaps ±30 %, which matters only for
the fall-off of intensity at high |g|. Sources:

- Cu 3.6149, Au 4.0782, Al 4.0495, Ni 3.5240 Å (fcc, Fm-3m); Si 5.4310 Å (diamond, Fd-3m,
  origin choice 1: Si at 8a 0,0,0).
- Cu2O (cuprite, Pn-3m, origin choice 1) a = 4.2696 Å: O at 2a (0,0,0), (½,½,½); Cu at
  4b (¼,¼,¼), (¾,¾,¼), (¾,¼,¾), (¼,¾,¾). Extinctions: h+k+l odd with mixed parity is
  absent (e.g. 100, 210, 221); 110 is allowed (oxygen only); 111 is allowed (copper only).
- 2H-MoS2, 2H-WS2, 2H-WSe2 (P6_3/mmc): metal at 2c (⅓,⅔,¼), chalcogen at 4f (⅓,⅔,z).
  MoS2 a = 3.1604, c = 12.295 Å, z = 0.621 (Bronsema, de Boer & Jellinek 1986);
  WS2 a = 3.1532, c = 12.323 Å, z = 0.6225 and WSe2 a = 3.2820, c = 12.960 Å, z = 0.621
  (Schutte, de Boer & Jellinek 1987).
- Graphene (P6/mmm, C at 2c) a = 2.461 Å and hBN monolayer (P-6m2, B at 1c, N at 1e)
  a = 2.504 Å: single layers (``is_layer=True``) with c = 20 Å of vacuum along the layer
  normal; only l = 0 reflections are enumerated.
"""

from __future__ import annotations

from collections.abc import Callable

from stemkit.physics.crystal import Atom, Crystal

__all__ = ["crystal", "preset_names"]

LAYER_VACUUM_ANGSTROM = 20.0


def _fcc(name: str, a: float, b_iso: float) -> Crystal:
    return Crystal.from_asymmetric_unit(a, a, a, 90, 90, 90, [Atom(name, (0, 0, 0), 1.0, b_iso)], "Fm-3m", name=name)


def _silicon() -> Crystal:
    a = 5.4310
    return Crystal.from_asymmetric_unit(a, a, a, 90, 90, 90, [Atom("Si", (0, 0, 0), 1.0, 0.46)], "Fd-3m", name="Si")


def _cuprite() -> Crystal:
    a = 4.2696
    atoms = [Atom("O", (0, 0, 0), 1.0, 0.9), Atom("Cu", (0.25, 0.25, 0.25), 1.0, 1.2)]
    return Crystal.from_asymmetric_unit(a, a, a, 90, 90, 90, atoms, "Pn-3m", name="Cu2O")


def _dichalcogenide(metal: str, chalcogen: str, a: float, c: float, z: float) -> Crystal:
    atoms = [Atom(metal, (1 / 3, 2 / 3, 0.25), 1.0, 0.3), Atom(chalcogen, (1 / 3, 2 / 3, z), 1.0, 0.5)]
    return Crystal.from_asymmetric_unit(a, a, c, 90, 90, 120, atoms, "P6_3/mmc", name=f"{metal}{chalcogen}2")


def _graphene() -> Crystal:
    a = 2.461
    atoms = [Atom("C", (1 / 3, 2 / 3, 0), 1.0, 0.3)]
    return Crystal.from_asymmetric_unit(a, a, LAYER_VACUUM_ANGSTROM, 90, 90, 120, atoms, "P6/mmm",
                                        name="graphene", is_layer=True)


def _hexagonal_boron_nitride() -> Crystal:
    a = 2.504
    atoms = [Atom("B", (1 / 3, 2 / 3, 0), 1.0, 0.3), Atom("N", (2 / 3, 1 / 3, 0), 1.0, 0.3)]
    return Crystal(a, a, LAYER_VACUUM_ANGSTROM, 90, 90, 120, atoms, name="hBN", space_group="P-6m2", is_layer=True)


_PRESETS: dict[str, Callable[[], Crystal]] = {
    "Cu": lambda: _fcc("Cu", 3.6149, 0.55),
    "Au": lambda: _fcc("Au", 4.0782, 0.62),
    "Al": lambda: _fcc("Al", 4.0495, 0.86),
    "Ni": lambda: _fcc("Ni", 3.5240, 0.37),
    "Si": _silicon,
    "Cu2O": _cuprite,
    "MoS2": lambda: _dichalcogenide("Mo", "S", 3.1604, 12.295, 0.621),
    "WS2": lambda: _dichalcogenide("W", "S", 3.1532, 12.323, 0.6225),
    "WSe2": lambda: _dichalcogenide("W", "Se", 3.2820, 12.960, 0.621),
    "graphene": _graphene,
    "hBN": _hexagonal_boron_nitride,
}
_ALIASES = {"cuprite": "Cu2O", "2h-mos2": "MoS2", "2h-ws2": "WS2", "2h-wse2": "WSe2", "h-bn": "hBN"}


def preset_names() -> list[str]:
    """Names accepted by :func:`crystal`."""
    return list(_PRESETS)


def crystal(name: str) -> Crystal:
    """A new :class:`~stemkit.physics.Crystal` for a built-in name (case-insensitive).

    Examples
    --------
    >>> crystal("Cu2O").point_group.order
    24
    """
    lookup = {key.lower(): key for key in _PRESETS} | _ALIASES
    key = lookup.get(str(name).strip().lower())
    if key is None:
        raise ValueError(f"unknown crystal preset {name!r}; choose one of {preset_names()}, or build a Crystal "
                         "(Crystal(...), Crystal.from_asymmetric_unit(...) or Crystal.from_cif(path)).")
    return _PRESETS[key]()
