"""Observers estimate the range to quantize a tensor to, per tensor or per channel.

Each observer sees tensors through :meth:`Observer.observe` (weights once, activations once per
calibration batch) and returns the clipping range with :meth:`Observer.range`. Use
:func:`make_observer` to build one by name: ``minmax``, ``moving_average``, ``percentile``, ``mse``,
``entropy`` (KL divergence of a histogram, as in TensorRT's entropy calibration).
"""
from __future__ import annotations

import abc

import torch
from torch import Tensor

from ..errors import UserError
from .ops import fake_quantize, qparams

OBSERVERS = ("minmax", "moving_average", "percentile", "mse", "entropy")


class Observer(abc.ABC):
    """Tracks tensors and proposes a quantization range.

    Args:
        axis: channel axis for per-channel ranges; None for one range per tensor.
    """

    def __init__(self, axis: int | None = None):
        self.axis = axis
        self.batches = 0

    def _rows(self, x: Tensor) -> Tensor:
        """``x`` as (channels, values) for per-channel observers, or (1, values)."""
        x = x.detach().float()
        if self.axis is None:
            return x.reshape(1, -1)
        return x.movedim(self.axis, 0).reshape(x.shape[self.axis], -1)

    def observe(self, x: Tensor) -> None:
        """Record one tensor (a weight, or one batch of activations)."""
        self._update(self._rows(x))
        self.batches += 1

    def range(self, qmin: int, qmax: int, symmetric: bool) -> tuple[Tensor, Tensor]:
        """(lo, hi) to quantize onto [qmin, qmax]: 0-d tensors per tensor, 1-d per channel."""
        if self.batches == 0:
            raise UserError("An observer saw no data: the calibration loader yielded no batches; pass data with samples.")
        lo, hi = self._range(qmin, qmax, symmetric)
        return (lo[0], hi[0]) if self.axis is None else (lo, hi)

    @abc.abstractmethod
    def _update(self, rows: Tensor) -> None:
        """Record (channels, values) data."""

    @abc.abstractmethod
    def _range(self, qmin: int, qmax: int, symmetric: bool) -> tuple[Tensor, Tensor]:
        """(lo, hi), each of shape (channels,)."""


class MinMaxObserver(Observer):
    """The smallest and largest values seen."""

    def __init__(self, axis: int | None = None):
        super().__init__(axis)
        self.lo = self.hi = None

    def _update(self, rows: Tensor) -> None:
        lo, hi = rows.amin(1), rows.amax(1)
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)

    def _range(self, qmin, qmax, symmetric):
        return self.lo, self.hi


class MovingAverageMinMaxObserver(MinMaxObserver):
    """Exponential moving average of each batch's min and max (robust to one outlier batch).

    Args:
        momentum: weight of the newest batch.
    """

    def __init__(self, axis: int | None = None, momentum: float = 0.1):
        super().__init__(axis)
        self.momentum = momentum

    def _update(self, rows: Tensor) -> None:
        lo, hi = rows.amin(1), rows.amax(1)
        if self.lo is None:
            self.lo, self.hi = lo, hi
        else:
            self.lo = torch.lerp(self.lo, lo, self.momentum)
            self.hi = torch.lerp(self.hi, hi, self.momentum)


class _SampleObserver(Observer):
    """Keeps a bounded random sample of the values per channel and chooses the range from it."""

    def __init__(self, axis: int | None = None, max_samples: int = 1 << 18, seed: int = 0):
        super().__init__(axis)
        self.max_samples = max_samples
        self.generator = torch.Generator().manual_seed(seed)
        self.samples: Tensor | None = None

    def _update(self, rows: Tensor) -> None:
        data = rows if self.samples is None else torch.cat([self.samples, rows], 1)
        if data.shape[1] > self.max_samples:
            keep = torch.randperm(data.shape[1], generator=self.generator)[: self.max_samples]
            data = data[:, keep]
        self.samples = data


class PercentileObserver(_SampleObserver):
    """Clips at a percentile of the values (and the mirrored one below).

    Args:
        percentile: upper percentile in (50, 100], e.g. 99.99.
    """

    def __init__(self, axis: int | None = None, percentile: float = 99.99, **kwargs):
        super().__init__(axis, **kwargs)
        if not 50 < percentile <= 100:
            raise UserError(f"percentile must be in (50, 100], got {percentile}.")
        self.percentile = percentile

    def _range(self, qmin, qmax, symmetric):
        q = torch.tensor([1 - self.percentile / 100, self.percentile / 100])
        lo, hi = torch.quantile(self.samples, q, dim=1)
        return lo, hi


class MSEObserver(_SampleObserver):
    """Chooses, per channel, the clipping range (a fraction of min-max) with the least squared error.

    Args:
        grid: number of candidate clipping fractions in [0.2, 1].
    """

    def __init__(self, axis: int | None = None, grid: int = 64, **kwargs):
        super().__init__(axis, **kwargs)
        self.grid = grid

    def _range(self, qmin, qmax, symmetric):
        x = self.samples
        lo, hi = x.amin(1), x.amax(1)
        best = torch.full_like(lo, float("inf"))
        best_lo, best_hi = lo.clone(), hi.clone()
        for frac in torch.linspace(0.2, 1.0, self.grid):
            scale, zero = qparams(lo * frac, hi * frac, qmin, qmax, symmetric)
            err = (fake_quantize(x, scale, zero, qmin, qmax, axis=0) - x).pow(2).mean(1)
            better = err < best
            best = torch.where(better, err, best)
            best_lo, best_hi = torch.where(better, lo * frac, best_lo), torch.where(better, hi * frac, best_hi)
        return best_lo, best_hi


class EntropyObserver(_SampleObserver):
    """TensorRT-style entropy calibration: the |x| threshold whose quantized histogram has the least
    KL divergence from the original one.

    Args:
        bins: histogram bins over [0, max |x|].
    """

    def __init__(self, axis: int | None = None, bins: int = 2048, **kwargs):
        super().__init__(axis, **kwargs)
        self.bins = bins

    def _range(self, qmin, qmax, symmetric):
        lo, hi = self.samples.amin(1), self.samples.amax(1)
        signed = symmetric or bool((lo < 0).any() and (hi > 0).any())
        levels = (qmax - qmin + 1) // 2 if signed else qmax - qmin + 1
        bound = torch.stack([self._threshold(row.abs(), levels) for row in self.samples])
        return torch.maximum(lo, -bound), torch.minimum(hi, bound)

    def _threshold(self, values: Tensor, levels: int) -> Tensor:
        top = values.max()
        if top == 0:
            return top
        hist = torch.histc(values, self.bins, 0, float(top))
        best_kl, best_i = float("inf"), self.bins
        for i in range(levels, self.bins + 1, max(1, (self.bins - levels) // 128)):
            kl = _kl_of_clipping(hist, i, levels)
            if kl < best_kl:
                best_kl, best_i = kl, i
        return top * best_i / self.bins


def _kl_of_clipping(hist: Tensor, i: int, levels: int) -> float:
    """KL(P || Q): P = first ``i`` bins with the tail folded into the last; Q = those bins merged into
    ``levels`` groups and spread back evenly over the non-empty bins."""
    p = hist[:i].clone()
    p[-1] += hist[i:].sum()
    group = torch.arange(i) * levels // i
    nonzero = (hist[:i] > 0).float()
    sums = torch.zeros(levels).index_add_(0, group, hist[:i])
    counts = torch.zeros(levels).index_add_(0, group, nonzero)
    q = nonzero * (sums / counts.clamp_min(1))[group]
    p, q = p / p.sum(), q / q.sum().clamp_min(1e-12)
    mask = p > 0
    return float((p[mask] * torch.log(p[mask] / q[mask].clamp_min(1e-12))).sum())


def make_observer(name: str, axis: int | None = None) -> Observer:
    """An observer by name (one of :data:`OBSERVERS`)."""
    classes = {
        "minmax": MinMaxObserver,
        "moving_average": MovingAverageMinMaxObserver,
        "percentile": PercentileObserver,
        "mse": MSEObserver,
        "entropy": EntropyObserver,
    }
    if name not in classes:
        raise UserError(f"Unknown observer {name!r}; choose one of {', '.join(OBSERVERS)}.")
    return classes[name](axis)
