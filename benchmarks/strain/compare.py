"""The issue-7 table: MAE of exx, eyy, exy and rotation against the truth, and the time, per method and film.

Each method's maps are relative to its own reference region (``reference`` in its result),
so the truth is put relative to the same region first: ``F_true F_ref⁻¹`` with ``F_ref`` the
component-wise median truth there, then read off by the same polar decomposition
(DESIGN.md). MAE is over every probe position; a position a method left without an answer
(NaN) is counted in the ``failed`` column, not in the MAE. py4DSTEM's and auto4dstem's axis and
sign conventions are checked against the truth (Pearson r of each converted map; for auto4dstem
also of its raw exx/eyy and of the negated rotation, which must correlate worse).

Run: ``.venv/bin/python benchmarks/strain/compare.py`` (after run_stemkit.py / run_py4dstem.py /
run_auto4dstem.py)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stemkit.physics.specimens import deformation_gradient
from stemkit.strain.polar import polar_strain, relative_deformation

HERE = Path(__file__).resolve().parent
NAMES = ("exx", "eyy", "exy", "rotation")
LABELS = {"stemkit-ccstae": "stemkit CCSTAE", "stemkit-lattice": "stemkit LatticeFit", "py4dstem": "py4DSTEM StrainMap",
          "auto4dstem": "auto4dstem 0.2.8"}


def truth_relative(film, reference: np.ndarray) -> dict[str, np.ndarray]:
    f = deformation_gradient(*(film[name] for name in NAMES))
    values = polar_strain(relative_deformation(f, np.median(f[reference], axis=0)))
    return dict(zip(NAMES, values))


def py4dstem_polar(result, reference: np.ndarray) -> dict[str, np.ndarray]:
    """py4DSTEM's fitted bases read off by stemkit's polar decomposition (its qx = rows = ky, qy = kx)."""
    from stemkit.strain.polar import deformation_from_bases
    from stemkit.strain.reference import strain_fields
    from stemkit.strain.symmetry import lattice_symmetry_order

    bases = np.stack([np.stack([result["g1y"], result["g2y"]], -1), np.stack([result["g1x"], result["g2x"]], -1)], -2)
    ok = np.all(np.isfinite(bases), axis=(-2, -1)) & reference
    reference_basis = np.median(bases[ok], axis=0)
    deformation = deformation_from_bases(bases, reference_basis)
    fields, _ = strain_fields(deformation, np.zeros(reference.shape, int), reference,
                              lattice_symmetry_order(reference_basis))
    return fields


def rows() -> list[str]:
    out = []
    for film_path in sorted((HERE / "data").glob("film_bg*.npz")):
        film = np.load(film_path)
        w = int(round(100 * float(film["background_fraction"])))
        for result_path in sorted((HERE / "results").glob(f"*_{film_path.stem}.npz")):
            result = np.load(result_path)
            method = result_path.stem.split("_")[0]
            label = LABELS.get(method.rsplit("-t", 1)[0], method)
            if method == "auto4dstem":
                label += (f" (conv_size {int(result['conv_size'])}, {int(result['stage1_epochs'])}+"
                          f"{int(result['stage2_epochs'])} epochs of {int(result['per_epoch']):,} patterns)")
            threads = f", {int(result['threads'])} thread(s)" if "threads" in result else ""
            truth = truth_relative(film, result["reference"].astype(bool))
            errors = [np.nanmean(np.abs(result[name] - truth[name])) for name in NAMES]
            failed = int(np.isnan(result["exx"]).sum())
            out.append(f"| {w} % | {label}{threads} | {errors[0]:.5f} | {errors[1]:.5f} | {errors[2]:.5f} | "
                       f"{errors[3]:.3f} | {failed} | {float(result['wall_s']):.0f} | {float(result['cpu_s']):.0f} |")
            if method == "py4dstem" and "g1x" in result:
                polar = py4dstem_polar(result, result["reference"].astype(bool))
                errors = [np.nanmean(np.abs(polar[name] - truth[name])) for name in NAMES]
                out.append(f"| {w} % | py4DSTEM fit, stemkit polar read-off | {errors[0]:.5f} | {errors[1]:.5f} | "
                           f"{errors[2]:.5f} | {errors[3]:.3f} | {int(np.isnan(polar['exx']).sum())} | same | same |")
            if method == "py4dstem" and w == 0:
                r = [np.corrcoef(np.nan_to_num(result[n]).ravel(), truth[n].ravel())[0, 1] for n in NAMES]
                print("py4DSTEM convention check on the 0 % film, Pearson r with the truth: "
                      + ", ".join(f"{n} {v:+.2f}" for n, v in zip(NAMES, r)))
            if method == "auto4dstem":
                print(f"auto4dstem convention check on the {w} % film, Pearson r with the truth: "
                      + ", ".join(f"{n} {pearson(result[n], truth[n]):+.2f}" for n in NAMES)
                      + f"; alternatives (their exx, their eyy, −rotation): exx {pearson(result['raw_exx'], truth['exx']):+.2f}, "
                      f"eyy {pearson(result['raw_eyy'], truth['eyy']):+.2f}, "
                      f"rotation {pearson(-result['rotation'], truth['rotation']):+.2f}")
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.nan_to_num(a).ravel(), b.ravel())[0, 1])


def main() -> None:
    print("| background | method | MAE exx | MAE eyy | MAE exy | MAE rotation (°) | failed | wall (s) | CPU (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows():
        print(row)


if __name__ == "__main__":
    main()
