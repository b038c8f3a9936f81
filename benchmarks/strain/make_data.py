"""Benchmark specimens for issue 7: WS2 films under smooth known strain, four background weights.

``strained_film`` (hexagonal 2H-WS2 at [001], 200 × 200 px patterns of 0.025 1/Å, the default
smooth fields: 1-2.5 % strain and up to ~4° of rotation), Lorentzian background weight w of
0, 25, 50 and 70 % (Qin, Agar and Tran's noise model), then Poisson noise at ``DOSE``
electrons per pattern. Written as ``data/film_bg<w>.npz``: ``counts`` (uint16), ``k_step``,
``beam_energy_kev`` and the ground truth ``exx, eyy, exy, rotation``.

Run: ``.venv/bin/python benchmarks/strain/make_data.py [scan side, default 64]``
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from stemkit.physics.specimens import strained_film

HERE = Path(__file__).resolve().parent
BACKGROUNDS = (0.0, 0.25, 0.5, 0.7)
DOSE = 1e5
PATTERN = 200
K_STEP = 0.025


def main(side: int = 64) -> None:
    (HERE / "data").mkdir(exist_ok=True)
    for w in BACKGROUNDS:
        film = strained_film("WS2", (side, side), pattern_size=PATTERN, k_step=K_STEP, dose=DOSE,
                             background_fraction=w, seed=7)
        counts = film.intensity.values
        assert counts.max() < 65535
        path = HERE / "data" / f"film_bg{int(round(100 * w)):02d}.npz"
        np.savez(path, counts=counts.astype(np.uint16), k_step=K_STEP, beam_energy_kev=300.0, dose=DOSE,
                 background_fraction=w, **{name: film[name].values for name in ("exx", "eyy", "exy", "rotation")})
        print(f"wrote {path.name}: {counts.shape}, {counts.sum(axis=(2, 3)).mean():.0f} counts per pattern")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 64)
