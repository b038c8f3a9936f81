"""Divisive clustering on deformed_flake specimens: automatic mode against the authors' manual recipe.

    .venv/bin/python benchmarks/clustering/run.py            # the recorded benchmark
    .venv/bin/python benchmarks/clustering/run.py --quick    # a small version (64x64 scan), a minute or two

For every specimen (written once to benchmarks/clustering/data/ as zarr, then read lazily,
chunk by chunk), each method runs end to end in its own process, so that its peak memory
(ru_maxrss) is its own:

- ``auto``: ``DivisiveClustering()`` — k by BIC, size and spatial-coherence stopping rule;
- ``manual``: Shi et al.'s recipe — k-means on the selected raw pixels, with the tree typed
  by hand as in the paper: k = 2 (flake | vacuum), then 2, then (2, 4).

Printed per method: adjusted Rand index (ARI) against the ground-truth regions and against
the deformation classes (regions with identical crystal, strain, rotation, tilt and
thickness merged: with 6 ripple stripes, stripes 1 and 3 and stripes 4 and 6 carry the same
tilt and have identical patterns); for every split whose two siblings are each >= 95 % one
lattice (same F), the measured strain and rotation against the truth; time and peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
PURITY = 0.95
PAPER_TREE = {(): 2, (0,): 2, (0, 0): 2, (0, 1): 4}

SPECIMENS = {
    # name: (deformed_flake keyword arguments)
    "flake256": dict(scan_shape=(256, 256), pattern_size=128, seed=1),
    "flake96_2ripples": dict(scan_shape=(96, 96), pattern_size=128, n_ripples=2, seed=2),
}
QUICK = {
    "flake64": dict(scan_shape=(64, 64), pattern_size=128, seed=1),
    "flake48_2ripples": dict(scan_shape=(48, 48), pattern_size=128, n_ripples=2, seed=2),
}


# -- specimens --------------------------------------------------------------------------------
def specimen_path(name: str) -> Path:
    return DATA / f"{name}.zarr"


def write_specimen(name: str, kwargs: dict) -> None:
    """Simulate once (lazily, row chunk by row chunk) and store as zarr."""
    from stemkit.physics.specimens import deformed_flake

    path = specimen_path(name)
    if (path / ".done").exists():
        return
    start = time.perf_counter()
    flake = deformed_flake(**kwargs, lazy=True)
    flake.to_zarr(path, mode="w")
    (path / ".done").write_text(json.dumps(kwargs))
    print(f"  wrote {name} {kwargs} in {time.perf_counter() - start:.0f} s", flush=True)


def open_specimen(name: str):
    import xarray as xr

    return xr.open_zarr(specimen_path(name), chunks={})


# -- truth ------------------------------------------------------------------------------------
def region_deformations(flake) -> np.ndarray:
    from stemkit.physics.specimens import deformation_gradient

    return deformation_gradient(flake.exx.values, flake.eyy.values, flake.exy.values, flake.rotation.values)


def deformation_classes(flake) -> np.ndarray:
    """Class of every region: regions whose crystal, strain, rotation, tilts and thickness agree share one."""
    keys = [tuple(np.round([float(flake[f].values[i]) for f in ("exx", "eyy", "exy", "rotation", "tilt_x", "tilt_y",
                                                                   "thickness")], 9)) + (str(flake.material.values[i]),)
            for i in range(flake.sizes["region_id"])]
    unique = {key: index for index, key in enumerate(dict.fromkeys(keys))}
    return np.array([unique[key] for key in keys])


def lattice_of(members: np.ndarray, regions: np.ndarray, flake, deformations: np.ndarray):
    """The F shared by >= PURITY of the members (vacuum has none), or None."""
    labels = regions.ravel()[members]
    vacuum = flake.is_vacuum.values
    votes: dict[int, int] = {}
    for region, count in zip(*np.unique(labels, return_counts=True)):
        if vacuum[region]:
            continue
        match = next((key for key in votes if np.allclose(deformations[key], deformations[region], atol=1e-12)), region)
        votes[match] = votes.get(match, 0) + int(count)
    if not votes:
        return None
    best = max(votes, key=votes.get)
    return deformations[best] if votes[best] >= PURITY * len(labels) else None


def split_errors(result: dict, flake) -> list[dict]:
    """Measured vs true strain and rotation of every reading between two single-lattice siblings."""
    from stemkit.physics.specimens import strain_from_deformation

    regions = flake.region.values
    deformations = region_deformations(flake)
    members = {int(k): np.array(v) for k, v in result["members"].items()}
    rows = []
    for node, reading in result["readings"].items():
        node = int(node)
        if reading["status"] != "ok":
            continue
        f_node = lattice_of(members[node], regions, flake, deformations)
        f_ref = lattice_of(members[reading["reference"]], regions, flake, deformations)
        if f_node is None or f_ref is None:
            continue
        truth = np.array(strain_from_deformation(f_node @ np.linalg.inv(f_ref)))
        measured = np.array([reading[k] for k in ("exx", "eyy", "exy", "rotation")])
        rows.append({"node": node, "reference": reading["reference"], "truth": truth.tolist(),
                     "measured": measured.tolist(), "strain_error": float(np.abs(measured[:3] - truth[:3]).max()),
                     "rotation_error": float(abs(measured[3] - truth[3]))})
    return rows


# -- one method, in its own process ---------------------------------------------------------------
def run_method(specimen: str, method: str) -> dict:
    """Fit one method on one stored specimen; return labels, readings, time and memory."""
    from stemkit.clustering import DivisiveClustering

    flake = open_specimen(specimen)
    data = flake.intensity
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if method == "auto":
        model = DivisiveClustering(progress=False)
    elif method == "manual":
        model = DivisiveClustering(splitter="kmeans", tree=PAPER_TREE, node_components=None, progress=False)
    else:
        raise ValueError(method)
    start = time.perf_counter()
    cpu_start = time.process_time()
    model.fit(data)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    readings = {}
    if model.readings_ is not None:
        for node in model.readings_.node.values[1:]:
            r = model.readings_.sel(node=node)
            readings[int(node)] = {"reference": int(r.reference), "status": str(r.status.values),
                                   **{k: float(r[k]) for k in ("exx", "eyy", "exy", "rotation")}}
    return {
        "labels": model.labels_.values.tolist(),
        "members": {node.id: node.members.tolist() for node in model.tree_},
        "tree": repr(model.tree_),
        "readings": readings,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "timings": model.timings_,
        "load_average": os.getloadavg()[0],
        "peak_rss": peak,
        "rss_before_fit": rss_before,
        "n_pixels": int(model.features_.pixels_.attrs["n_pixels"]),
        "data_bytes": int(data.nbytes),
    }


def run_in_subprocess(specimen: str, method: str) -> dict:
    out = DATA / f"{specimen}.{method}.json"
    env = dict(os.environ, PYTHONPATH=str(HERE.parent.parent))
    subprocess.run([sys.executable, __file__, "--worker", specimen, method, str(out)], check=True, env=env)
    return json.loads(out.read_text())


# -- report ---------------------------------------------------------------------------------------
def report(specimen: str, results: dict[str, dict]) -> None:
    from sklearn.metrics import adjusted_rand_score

    flake = open_specimen(specimen)
    regions = flake.region.values.ravel()
    classes = deformation_classes(flake)[regions]
    print(f"\n## {specimen}: scan {flake.sizes['scan_y']}x{flake.sizes['scan_x']}, patterns "
          f"{flake.sizes['ky']}x{flake.sizes['kx']}, {flake.sizes['region_id']} regions, "
          f"{len(np.unique(classes))} deformation classes, data {flake.intensity.nbytes / 2**30:.2f} GiB")
    print("| figure | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    rows = {"leaves": [], "ARI vs regions": [], "ARI vs deformation classes": [], "splits read (single-lattice pairs)": [],
            "worst strain error": [], "worst rotation error (deg)": [], "time (s)": [],
            "CPU time (s, all threads)": [], "stages (s)": [], "1-min load average at the end": [], "peak RSS (GiB)": [], "RSS before fit (GiB)": [], "selected pixels": []}
    for result in results.values():
        labels = np.array(result["labels"]).ravel()
        errors = split_errors(result, flake)
        rows["leaves"].append(str(len(np.unique(labels))))
        rows["ARI vs regions"].append(f"{adjusted_rand_score(regions, labels):.4f}")
        rows["ARI vs deformation classes"].append(f"{adjusted_rand_score(classes, labels):.4f}")
        rows["splits read (single-lattice pairs)"].append(str(len(errors)))
        rows["worst strain error"].append(f"{max((e['strain_error'] for e in errors), default=float('nan')):.5f}")
        rows["worst rotation error (deg)"].append(f"{max((e['rotation_error'] for e in errors), default=float('nan')):.4f}")
        rows["time (s)"].append(f"{result['seconds']:.1f}")
        rows["CPU time (s, all threads)"].append(f"{result['cpu_seconds']:.1f}")
        rows["stages (s)"].append(", ".join(f"{k} {v:.0f}" for k, v in result["timings"].items()))
        rows["1-min load average at the end"].append(f"{result['load_average']:.1f}")
        rows["peak RSS (GiB)"].append(f"{result['peak_rss'] / 2**30:.2f}")
        rows["RSS before fit (GiB)"].append(f"{result['rss_before_fit'] / 2**30:.2f}")
        rows["selected pixels"].append(str(result["n_pixels"]))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(values) + " |")
    for method, result in results.items():
        print(f"\n{method} tree:\n{result['tree']}")
        for e in split_errors(result, flake):
            t, m = np.array(e["truth"]), np.array(e["measured"])
            print(f"  node {e['node']} vs {e['reference']}: truth exx {t[0]:+.4f} eyy {t[1]:+.4f} exy {t[2]:+.4f} "
                  f"rot {t[3]:+.3f}; measured {m[0]:+.4f} {m[1]:+.4f} {m[2]:+.4f} {m[3]:+.3f}; "
                  f"errors {e['strain_error']:.5f}, {e['rotation_error']:.4f} deg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small specimens (64x64 and 48x48 scans)")
    parser.add_argument("--worker", nargs=3, metavar=("SPECIMEN", "METHOD", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        specimen, method, out = args.worker
        Path(out).write_text(json.dumps(run_method(specimen, method)))
        return
    DATA.mkdir(exist_ok=True)
    specimens = QUICK if args.quick else SPECIMENS
    for name, kwargs in specimens.items():
        write_specimen(name, kwargs)
        results = {method: run_in_subprocess(name, method) for method in ("auto", "manual")}
        report(name, results)


if __name__ == "__main__":
    main()
