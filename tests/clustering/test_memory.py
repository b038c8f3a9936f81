"""On dask-backed data the clustering holds features and per-chunk buffers, never the cube.

Besides the features (n_patterns × n_pixels float32) and a few chunks in flight, the fit
holds fixed-size buffers: the covariance of the pixels (max_pixels² float64, 32 MiB at the
default 2048) and batches of 1024 patterns. The test keeps max_pixels small so that those
fixed buffers do not hide what scales with the data.
"""

from __future__ import annotations

import tracemalloc

import numpy as np

from stemkit.clustering import ClusteringFeatures, DivisiveClustering
from stemkit.physics.specimens import deformed_flake


def test_dask_fit_peak_memory_is_a_fraction_of_the_data():
    flake = deformed_flake(scan_shape=(40, 40), pattern_size=64, k_step=0.04, n_ripples=2, seed=3)
    data = flake.intensity.chunk({"scan_y": 1})  # 40 chunks of 40 patterns, 0.6 MiB each
    data_bytes = data.nbytes
    features = ClusteringFeatures(max_pixels=256, progress=False)
    DivisiveClustering(features=features, progress=False).fit(data.isel(scan_y=slice(0, 12)))  # imports, caches
    tracemalloc.start()  # allocations from here on: the numpy cube behind the chunks is not counted
    try:
        model = DivisiveClustering(features=features, progress=False).fit(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(model.tree_.leaves) >= 2
    assert peak < 0.4 * data_bytes, f"peak traced memory {peak / 2**20:.1f} MiB for {data_bytes / 2**20:.1f} MiB of data"
    features_bytes = 1600 * model.features_.pixels_.attrs["n_pixels"] * 4
    assert features_bytes < 0.25 * data_bytes
    assert np.isfinite(model.means_.values).all()
