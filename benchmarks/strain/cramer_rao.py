"""The Cramér-Rao bound of the benchmark films (issue 7): the least per-pattern scatter any unbiased estimator
of exx, eyy, exy and rotation can reach from one pattern at the films' dose and background.

For Poisson counts ``N ~ Poisson(λ(θ))`` the Fisher information is ``I = Σ_k ∂λ_k/∂θ ∂λ_k/∂θᵀ / λ_k``; ``λ`` is
``strained_film``'s noiseless pattern (the same optics as ``make_data.py``) times the dose, its derivatives by
central differences in the four parameters about the unstrained lattice. Printed: the bound's standard
deviation and the MAE it implies for Gaussian scatter (``√(2/π)`` σ). The bound ignores the shift, gain and
offset a real estimator must also fit, so it is a little optimistic.

Run: ``.venv/bin/python benchmarks/strain/cramer_rao.py``
"""

from __future__ import annotations

import numpy as np

from make_data import BACKGROUNDS, DOSE, K_STEP, PATTERN
from stemkit.physics.specimens import strained_film

STEP = 2e-4
NAMES = ("exx", "eyy", "exy", "rotation")


def pattern(background: float, **fields: float) -> np.ndarray:
    values = {name: 0.0 for name in NAMES} | fields
    film = strained_film("WS2", (1, 1), pattern_size=PATTERN, k_step=K_STEP, dose=None,
                         background_fraction=background, **values)
    return DOSE * film.intensity.values[0, 0].astype(float).ravel()


def bound(background: float) -> np.ndarray:
    """Standard deviations of the bound: exx, eyy, exy (1) and rotation (degrees)."""
    lam = pattern(background)
    steps = {"exx": STEP, "eyy": STEP, "exy": STEP, "rotation": np.rad2deg(STEP)}  # rotation in radians below
    jac = np.stack([(pattern(background, **{n: s}) - pattern(background, **{n: -s})) / (2 * STEP)
                    for n, s in steps.items()])
    keep = lam > 0
    information = (jac[:, keep] / lam[keep]) @ jac[:, keep].T
    sigma = np.sqrt(np.diag(np.linalg.inv(information)))
    sigma[3] = np.rad2deg(sigma[3])
    return sigma


def main() -> None:
    print("| background | σ exx | σ eyy | σ exy | σ rotation (°) | MAE exx at the bound |")
    print("|---|---|---|---|---|---|")
    for w in BACKGROUNDS:
        s = bound(w)
        print(f"| {int(round(100 * w))} % | {s[0]:.5f} | {s[1]:.5f} | {s[2]:.5f} | {s[3]:.4f} | "
              f"{np.sqrt(2 / np.pi) * s[0]:.5f} |")


if __name__ == "__main__":
    main()
