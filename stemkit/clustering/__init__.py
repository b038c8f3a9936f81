"""Divisive hierarchical clustering of diffraction patterns (after Shi et al., npj Comput. Mater. 2022).

``DivisiveClustering().fit(data)`` splits the patterns again and again with an automatic
choice of k and a stopping rule, and reads the strain and rotation between sibling means.
"""

from stemkit.clustering.divisive import DivisiveClustering
from stemkit.clustering.features import ClusteringFeatures
from stemkit.clustering.reading import relative_lattice, split_readings
from stemkit.clustering.splitting import GaussianMixtureSplitter, HDBSCANSplitter, KMeansSplitter, spatial_coherence
from stemkit.clustering.tree import Node, Tree

__all__ = [
    "ClusteringFeatures",
    "DivisiveClustering",
    "GaussianMixtureSplitter",
    "HDBSCANSplitter",
    "KMeansSplitter",
    "Node",
    "Tree",
    "relative_lattice",
    "spatial_coherence",
    "split_readings",
]
