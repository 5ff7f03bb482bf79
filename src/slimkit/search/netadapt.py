"""NetAdapt-style greedy baseline: shrink the one channel group that costs least, step by step, to the budget.

Each iteration asks every group for the smallest ratio increase that removes ``step`` more of the
baseline MACs on its own, scores each candidate with the problem's proxy (validation metric after
BatchNorm recalibration) and keeps the best; it stops when the MACs budget is met.
"""
from __future__ import annotations

from tqdm.auto import tqdm

from ..errors import UserError
from ..prune import MAX_RATIO
from .policy import Policy, PruningProblem, Ratios


def netadapt(problem: PruningProblem, step: float = 0.05, iterations: int = 16,
             progress: bool = True) -> tuple[Policy, list[dict]]:
    """Greedy per-group pruning to the problem's MACs budget.

    Args:
        step: MACs removed per iteration, as a fraction of the baseline MACs, in (0, 1).
        iterations: bisection steps when solving one group's ratio.

    Returns:
        The final policy and the history (per iteration: the group shrunk, its ratio, MACs kept, score).
    """
    if not 0 < step < 1:
        raise UserError(f"step must be the fraction of baseline MACs removed per iteration, in (0, 1), got {step}.")
    ratios, history = [0.0] * problem.n_groups, []
    bar = tqdm(desc="netadapt", disable=not progress, leave=False)
    while not problem.feasible(ratios):
        goal = max(problem.target_macs, problem.macs_fraction(ratios) - step)
        candidates = []
        for g in range(problem.n_groups):
            ratio = _smallest_ratio(problem, ratios, g, goal, iterations)
            if ratio is not None:
                candidate = ratios[:g] + [ratio] + ratios[g + 1:]
                candidates.append((problem.score(candidate), g, candidate))
                bar.update()
        if not candidates:
            raise UserError(f"netadapt cannot reach target_macs={problem.target_macs}: no single group can remove "
                            f"{step:.0%} more of the MACs; lower step or raise target_macs.")
        score, g, ratios = max(candidates, key=lambda c: c[0])
        history.append({"group": "+".join(problem.pruner.group_layers[g]), "ratio": ratios[g],
                        "macs_fraction": problem.macs_fraction(ratios), "score": score})
    bar.close()
    return problem.policy(ratios, history[-1]["score"] if history else problem.score(ratios)), history


def _smallest_ratio(problem: PruningProblem, ratios: Ratios, g: int, goal: float, iterations: int) -> float | None:
    """The smallest ratio for group ``g`` alone that brings the MACs to ``goal``, or None if it cannot."""
    def macs(r: float) -> float:
        return problem.macs_fraction(ratios[:g] + [r] + ratios[g + 1:])

    lo, hi = ratios[g], MAX_RATIO
    if macs(hi) > goal:
        return None
    for _ in range(iterations):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if macs(mid) <= goal else (mid, hi)
    return hi
