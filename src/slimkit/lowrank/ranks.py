"""Rank selection: energy kept, empirical VBMF, and unfoldings of conv kernels."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def unfold(weight: Tensor, mode: int) -> Tensor:
    """The mode-``mode`` unfolding of a tensor: rows indexed by that mode."""
    return weight.movedim(mode, 0).reshape(weight.shape[mode], -1)


def energy_rank(matrix: Tensor, energy: float) -> int:
    """Smallest rank whose singular values keep ``energy`` of ``sum(sigma^2)``."""
    s2 = torch.linalg.svdvals(matrix.double()).square()
    kept = s2.cumsum(0) / s2.sum()
    return min(int((kept < energy - 1e-12).sum()) + 1, len(s2))


def vbmf_rank(matrix: Tensor) -> int:
    """Rank estimated by empirical variational Bayes matrix factorisation (Nakajima et al., 2013).

    The noise variance is found by minimising the EVBMF free energy over a log-spaced grid between its
    analytic bounds; the rank is the number of singular values above the resulting threshold.
    """
    y = matrix.double().numpy()
    if y.shape[0] > y.shape[1]:
        y = y.T
    rows, cols = y.shape
    s = np.linalg.svd(y, compute_uv=False)
    if rows < 2:
        return 1
    alpha = rows / cols
    tau_bar = 2.5129 * math.sqrt(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    h_ub = min(math.ceil(rows / (1 + alpha)) - 1, rows) - 1
    upper = float((s**2).sum() / (rows * cols))
    lower = max(float(s[h_ub + 1] ** 2 / (cols * x_bar)), float(np.mean(s[h_ub + 1 :] ** 2) / cols))
    grid = np.geomspace(max(lower, upper * 1e-12), upper, 2000)
    sigma2 = grid[int(np.argmin(_free_energy(grid, s, rows, cols, x_bar)))]
    threshold = math.sqrt(cols * sigma2 * (1 + tau_bar) * (1 + alpha / tau_bar))
    return max(1, int((s > threshold).sum()))


def _free_energy(sigma2: np.ndarray, s: np.ndarray, rows: int, cols: int, x_bar: float) -> np.ndarray:
    """EVBMF objective for each candidate noise variance (rows of the result)."""
    alpha = rows / cols
    x = s[None, :] ** 2 / (cols * sigma2[:, None])
    big = x > x_bar
    xb = np.where(big, x, x_bar + 1)  # keeps sqrt/log finite where masked out
    tau = 0.5 * (xb - (1 + alpha) + np.sqrt((xb - (1 + alpha)) ** 2 - 4 * alpha))
    small_terms = np.where(big, 0.0, x - np.log(np.maximum(x, 1e-300)))
    big_terms = np.where(big, xb - tau + np.log((tau + 1) / xb) + alpha * np.log(tau / alpha + 1), 0.0)
    return small_terms.sum(1) + big_terms.sum(1)
