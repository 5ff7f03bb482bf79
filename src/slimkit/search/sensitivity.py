"""Per-group pruning sensitivity: the proxy metric lost when only one channel group is pruned.

Used to shrink a policy search space: a group whose metric collapses at a ratio is not searched past it.
"""
from __future__ import annotations

from typing import Sequence

from tqdm.auto import tqdm

from ..errors import UserError
from .policy import PruningProblem

RATIOS = (0.2, 0.4, 0.6, 0.8)


def prune_sensitivity(problem: PruningProblem, ratios: Sequence[float] = RATIOS,
                      progress: bool = True) -> tuple[float, list[dict[float, float]]]:
    """(unpruned score, per group {ratio: score lost}) with every other group left whole.

    Scores are the problem's proxy (validation metric after BatchNorm recalibration), so a drop is
    measured exactly like a search candidate.
    """
    if not ratios or not all(0 < r < 1 for r in ratios):
        raise UserError(f"sensitivity ratios must be fractions in (0, 1), got {list(ratios)}.")
    base = problem.score([0.0] * problem.n_groups)
    drops = []
    bar = tqdm(total=problem.n_groups * len(ratios), desc="sensitivity", disable=not progress, leave=False)
    for g in range(problem.n_groups):
        drops.append({})
        for r in sorted(ratios):
            one = [0.0] * problem.n_groups
            one[g] = r
            drops[-1][r] = base - problem.score(one)
            bar.update()
    bar.close()
    return base, drops


def ratio_caps(problem: PruningProblem, drops: list[dict[float, float]], tolerance: float) -> tuple[list[float], float]:
    """(largest ratio to search per group, tolerance used) from :func:`prune_sensitivity`'s drops.

    A group's cap is the first tested ratio whose drop exceeds ``tolerance`` (the largest tested ratio when
    none does): pruning further is known to cost more than the tolerance on its own. When every group at
    its cap still misses the MACs budget, the tolerance is doubled until it does not.
    """
    if tolerance <= 0:
        raise UserError(f"tolerance must be > 0 (metric lost, e.g. 0.05 = 5 points of top-1), got {tolerance}.")
    while True:
        caps = [next((r for r, d in sorted(g.items()) if d > tolerance), max(g)) for g in drops]
        if problem.feasible(caps) or all(c == max(g) for c, g in zip(caps, drops)):
            return caps, tolerance
        tolerance *= 2
