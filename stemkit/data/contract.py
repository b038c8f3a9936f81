"""Names, units and the error type shared by everything that checks the data contract."""

from __future__ import annotations

DIMS: tuple[str, str, str, str] = ("scan_y", "scan_x", "ky", "kx")
SCAN_DIMS: tuple[str, str] = ("scan_y", "scan_x")
K_DIMS: tuple[str, str] = ("ky", "kx")

SCAN_UNITS = "nm"
K_UNITS = "1/Å"
UNITS: dict[str, str] = {"scan_y": SCAN_UNITS, "scan_x": SCAN_UNITS, "ky": K_UNITS, "kx": K_UNITS}
LONG_NAMES: dict[str, str] = {
    "scan_y": "probe position y",
    "scan_x": "probe position x",
    "ky": "scattering vector k_y",
    "kx": "scattering vector k_x",
}


class ContractError(ValueError):
    """A DataArray or Dataset does not follow stemkit's data contract.

    The message lists every problem found and, for each, how to fix it.
    """

    def __init__(self, problems: list[str], *, what: str = "data") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{what} does not follow the stemkit data contract:\n{lines}")
