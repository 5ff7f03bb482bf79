"""Layers whose weight is a codebook of shared values indexed by bit-packed integers."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..graph.layers import is_conv1d, layer_base
from .kmeans import kmeans_1d
from .packing import pack_bits, packed_length, unpack_bits

SHAREABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)


class SharedWeight(nn.Module):
    """A weight tensor stored as ``codebook`` (float, trainable) plus ``indices`` (uint8, ``bits`` per value).

    With ``zero`` set, index 0 means an exact, untrainable 0 and the codebook holds the other
    ``2**bits - 1`` values. Each centroid's gradient is the *mean* over the weights that share it, so
    one learning rate suits layers of every size (a summed gradient over thousands of weights made
    centroid fine-tuning diverge: 4-bit fashion-cnn fell from 91% to 15% top-1 in 40 batches at lr 0.005).
    """

    def __init__(self, shape: tuple[int, ...], bits: int, zero: bool):
        super().__init__()
        self.shape, self.bits, self.zero = tuple(shape), bits, zero
        self.codebook = nn.Parameter(torch.zeros(2**bits - int(zero)))
        self.register_buffer("indices", torch.zeros(packed_length(math.prod(shape), bits), dtype=torch.uint8))

    @classmethod
    def fit(cls, weight: Tensor, bits: int, init: str, keep_zeros: bool) -> "SharedWeight":
        """Cluster ``weight`` with k-means (pruned zeros kept exact when ``keep_zeros``)."""
        flat = weight.detach().flatten().float().cpu()
        zero = keep_zeros and bool((flat == 0).any())
        shared = cls(weight.shape, bits, zero)
        index = torch.zeros(len(flat), dtype=torch.long)
        live = flat != 0 if zero else torch.ones_like(flat, dtype=torch.bool)
        centroids, assigned = kmeans_1d(flat[live], len(shared.codebook), init)
        index[live] = assigned + int(zero)
        with torch.no_grad():
            shared.codebook.copy_(centroids)
            shared.indices.copy_(pack_bits(index, bits))
        return shared.to(weight.device)

    def forward(self) -> Tensor:
        """The dense weight."""
        table = F.pad(self.codebook, (1, 0)) if self.zero else self.codebook
        index = unpack_bits(self.indices, self.bits, math.prod(self.shape))
        if self.training and table.requires_grad:  # training only: export and inference see a plain lookup
            counts = torch.bincount(index, minlength=len(table)).clamp_min(1).to(table.dtype)
            table = table.detach() + (table - table.detach()) / counts  # same values, mean gradient per centroid
        return table[index].view(self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, bits={self.bits}, zero={self.zero}"


class ClusteredLayer(nn.Module):
    """A Linear/Conv/Embedding layer (a subclass computing like one, or transformers' Conv1D) whose weight comes
    from a :class:`SharedWeight`."""

    def __init__(self, layer: nn.Module, shared: SharedWeight):
        super().__init__()
        if layer_base(layer, SHAREABLE) is None:
            raise TypeError(f"cannot share the weight of {type(layer).__name__}")
        self.transposed = is_conv1d(layer)  # weight stored (in, out)
        del layer.weight  # the dense tensor is replaced by the codebook, not kept beside it
        self.layer, self.shared = layer, shared

    @property
    def weight(self) -> Tensor:
        """The dense weight, in the replaced layer's layout (read-only), for models that read ``layer.weight``."""
        return self.shared()

    @property
    def bias(self) -> Tensor | None:
        """The replaced layer's bias (nn.TransformerEncoderLayer's fast path reads it from its layers)."""
        return getattr(self.layer, "bias", None)

    def forward(self, x: Tensor) -> Tensor:
        weight, layer = self.shared(), self.layer
        if self.transposed:
            return F.linear(x, weight.T, layer.bias)
        if isinstance(layer, nn.Linear):
            return F.linear(x, weight, layer.bias)
        if isinstance(layer, nn.Embedding):
            return F.embedding(x, weight, layer.padding_idx, layer.max_norm, layer.norm_type,
                               layer.scale_grad_by_freq, layer.sparse)
        return layer._conv_forward(x, weight, layer.bias)

    def float_weight(self) -> Tensor:
        """The codebook lookup (:class:`slimkit.measure.layers.StoredWeight`)."""
        return self.weight
