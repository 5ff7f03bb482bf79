"""Weight sharing by per-layer k-means: codebook + bit-packed indices — the ``cluster`` step — and the
entropy-coded Deep-Compression artifact."""
from .artifact import decode, encode, load_artifact, save_artifact, stream_sizes
from .config import Cluster
from .kmeans import kmeans_1d
from .packing import pack_bits, unpack_bits
from .shared import ClusteredLayer, SharedWeight
from .step import cluster

__all__ = [
    "Cluster", "ClusteredLayer", "SharedWeight", "cluster", "decode", "encode", "kmeans_1d", "load_artifact",
    "pack_bits", "save_artifact", "stream_sizes", "unpack_bits",
]
