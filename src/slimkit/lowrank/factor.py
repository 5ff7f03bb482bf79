"""Factorised replacements for Linear/Conv2d layers (and transformers' Conv1D, a Linear with its weight stored
transposed): structure, weights and MAC cost.

Ranks are lists: ``svd`` -> ``[r]``, ``tucker`` -> ``[r_out, r_in]``, ``cp`` -> ``[r]``.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

from ..errors import require
from ..graph.layers import compute_weight, is_conv1d


class Factorised(nn.Sequential):
    """The layers replacing a factorised layer, run in order.

    ``weight`` is the dense weight their product computes with, in the replaced layer's layout (a Conv1D's
    transposed), dtype and device: read-only, for models that read ``layer.weight``.
    """

    def __init__(self, *layers: nn.Module, kind: str = "svd", transposed: bool = False):
        super().__init__(*layers)
        self.kind, self.transposed = kind, transposed

    @property
    def weight(self) -> Tensor:
        """The dense weight of the factors' product (read-only)."""
        w = [m.weight.flatten(1) for m in self]
        first, last = self[0].weight, self[-1].weight
        if self.kind == "svd":
            dense = (w[1] @ w[0]).reshape(last.shape[0], *first.shape[1:])
        elif self.kind == "tucker":
            dense = torch.einsum("oa,abhw,bi->oihw", w[2], self[1].weight, w[0])
        else:
            dense = torch.einsum("or,rh,rw,ri->oihw", w[3], w[1], w[2], w[0])
        return dense.T if self.transposed else dense

    @property
    def bias(self) -> Tensor | None:
        """The last factor's bias, the replaced layer's (nn.TransformerEncoderLayer's fast path reads it)."""
        return self[-1].bias


def kind_of(layer: nn.Module, conv: str) -> str:
    """``svd`` for Linear (and Conv1D) and 1x1 convs, else the configured conv decomposition."""
    if not isinstance(layer, nn.Conv2d) or tuple(layer.kernel_size) == (1, 1):
        return "svd"
    return conv


def max_ranks(layer: nn.Module, kind: str) -> list[int]:
    """The largest ranks a decomposition of ``layer`` may use."""
    shape = compute_weight(layer).shape
    if kind == "tucker":
        return list(shape[:2])
    if kind == "svd":
        return [min(shape[:2])]
    return [min(math.prod(shape) // d for d in shape)]  # CP rank never needs to exceed this bound


def macs(layer: nn.Module, kind: str | None, ranks: list[int], in_size: tuple[int, ...], out_size: tuple[int, ...]) -> int:
    """MACs of one sample through ``layer`` (``kind=None``) or its factorisation with ``ranks``.

    ``in_size``/``out_size`` are the spatial sizes (H, W) of a conv's input/output, or the leading
    positions (e.g. tokens) of a Linear's input.
    """
    shape = compute_weight(layer).shape
    out_dim, in_dim = shape[:2]
    pin, pout = math.prod(in_size), math.prod(out_size)
    taps = math.prod(shape[2:])
    if kind is None:
        return pout * out_dim * in_dim * taps
    if kind == "svd":
        return pout * ranks[0] * (in_dim + out_dim)
    if kind == "tucker":
        r_out, r_in = ranks
        return pin * in_dim * r_in + pout * (r_in * r_out * taps + r_out * out_dim)
    (r,) = ranks
    kh, kw = layer.kernel_size
    return pin * in_dim * r + out_size[0] * in_size[1] * r * kh + pout * r * (kw + out_dim)


def build(layer: nn.Module, kind: str, ranks: list[int]) -> Factorised:
    """The factorised structure replacing ``layer`` (weights uninitialised; see :func:`factorise`)."""
    bias = layer.bias is not None
    if not isinstance(layer, nn.Conv2d):
        (r,) = ranks
        out_features, in_features = compute_weight(layer).shape
        return Factorised(nn.Linear(in_features, r, bias=False), nn.Linear(r, out_features, bias=bias),
                          transposed=is_conv1d(layer))
    cin, cout = layer.in_channels, layer.out_channels
    geometry = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation, padding_mode=layer.padding_mode)
    if kind == "svd":
        (r,) = ranks
        return Factorised(nn.Conv2d(cin, r, 1, bias=False, **geometry), nn.Conv2d(r, cout, 1, bias=bias))
    if kind == "tucker":
        r_out, r_in = ranks
        return Factorised(
            nn.Conv2d(cin, r_in, 1, bias=False),
            nn.Conv2d(r_in, r_out, layer.kernel_size, bias=False, **geometry),
            nn.Conv2d(r_out, cout, 1, bias=bias),
            kind=kind,
        )
    (r,) = ranks
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    pad = layer.padding if isinstance(layer.padding, str) else None
    ph, pw = (0, 0) if pad else layer.padding
    return Factorised(
        nn.Conv2d(cin, r, 1, bias=False),
        nn.Conv2d(r, r, (kh, 1), (sh, 1), pad or (ph, 0), (dh, 1), groups=r, bias=False, padding_mode=layer.padding_mode),
        nn.Conv2d(r, r, (1, kw), (1, sw), pad or (0, pw), (1, dw), groups=r, bias=False, padding_mode=layer.padding_mode),
        nn.Conv2d(r, cout, 1, bias=bias),
        kind=kind,
    )


def factors(weight: Tensor, kind: str, ranks: list[int]) -> list[Tensor]:
    """Weights of the layers :func:`build` makes, in order, computed from the dense ``weight``."""
    w = weight.detach().double().cpu()
    if kind == "svd":
        u, s, vh = torch.linalg.svd(w.flatten(1), full_matrices=False)
        root = s[: ranks[0]].sqrt()
        return [root[:, None] * vh[: ranks[0]], u[:, : ranks[0]] * root]
    tl = require("tensorly", "lowrank")
    from tensorly.decomposition import parafac, partial_tucker

    with tl.backend_context("pytorch"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TensorLy warns when an SVD init asks for more vectors than a mode has
        if kind == "tucker":
            (core, (u_out, u_in)), _ = partial_tucker(w, rank=ranks, modes=[0, 1], init="svd", random_state=0)
            return [u_in.T, core, u_out]
        cp = parafac(w, rank=ranks[0], init="svd", n_iter_max=100, tol=1e-6, random_state=0)
    lam, (a_out, a_in, a_h, a_w) = cp.weights, cp.factors
    return [a_in.T, a_h.T, a_w.T, a_out * lam]


def factorise(layer: nn.Module, kind: str, ranks: list[int]) -> Factorised:
    """``layer`` replaced by its ``kind`` factorisation with ``ranks`` (same dtype, device, bias)."""
    seq = build(layer, kind, ranks).to(layer.weight.device, layer.weight.dtype)
    with torch.no_grad():
        for child, value in zip(seq, factors(compute_weight(layer), kind, ranks)):
            child.weight.copy_(value.reshape(child.weight.shape))
        if layer.bias is not None:
            seq[-1].bias.copy_(layer.bias)
    return seq
