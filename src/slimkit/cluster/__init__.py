"""Weight sharing by per-layer k-means: codebook + bit-packed indices — the ``cluster`` step."""
from .config import Cluster
from .kmeans import kmeans_1d
from .packing import pack_bits, unpack_bits
from .shared import ClusteredLayer, SharedWeight
from .step import cluster

__all__ = ["Cluster", "ClusteredLayer", "SharedWeight", "cluster", "kmeans_1d", "pack_bits", "unpack_bits"]
