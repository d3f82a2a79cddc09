"""The decoding walk: replay greedy decoding step by step over a calibration table's answers.

The position average of :mod:`optimizer.expected_length` weighs every position of an answer
alike, but decoding visits only the positions where a step starts: a step that accepts a nodes
from position t lands on t + 1 + a. Right guesses cluster (a copied list, a stock phrase), and a
step through a cluster skips the rest of it, so the average over visited positions is lower than
over all of them. Greedy decoding is lossless, so on the calibration prompts the decoder's
trajectory is the recorded answer itself: walking it with the replayed acceptance gives the
decoder's tokens per step there, and the lookup chain drafted at the visited positions (what the
step's cost depends on). A table's ``segments`` say where each prompt's answer starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from medusa_core.spec.lookup import LookupConfig
from medusa_core.spec.trees import Path_

from .accuracy import AccuracyTable
from .exact import exact_optimum, speed_optimum
from .expected_length import LengthModelError, TreeScorer
from .profile import LatencyProfile


@dataclass(frozen=True)
class Walk:
    tokens: int  # emitted over all the walked answers
    steps: int
    chains: np.ndarray = field(repr=False)  # [steps] lookup chain drafted at each step (zeros without a lookup)
    leaves: np.ndarray = field(repr=False)  # [steps] whether the step's accepted path ended in a leaf
    visited: np.ndarray = field(repr=False)  # [steps] the table position each step started at

    @property
    def chain(self) -> float:
        """Mean lookup chain drafted per step."""
        return float(self.chains.mean()) if len(self.chains) else 0.0

    @property
    def tokens_per_step(self) -> float:
        return self.tokens / max(1, self.steps)


def walk_positions(accepted: np.ndarray, segments: Sequence[int]) -> list[int]:
    """Indices of the positions decoding visits: per segment from its first position, then
    1 + accepted further each step, until the segment ends."""
    visited, start = [], 0
    for length in segments:
        t = 0
        while t < length:
            visited.append(start + t)
            t += 1 + int(accepted[start + t])
        start += length
    return visited


def walk(table: AccuracyTable, tree: Sequence[Sequence[int]], lookup: LookupConfig | None = None) -> Walk:
    """Tokens and steps of greedy decoding with this tree and lookup over the table's answers."""
    if not table.has_ranks or not table.segments:
        raise LengthModelError("the decoding walk needs a table with per-position 'ranks' and 'segments' "
                               "(python -m medusa_core calibrate records both)")
    scorer = TreeScorer(table, "empirical", lookup)
    accepted = scorer.replay_accepted(tree)  # [P]
    visited = walk_positions(accepted, table.segments)
    drafted = np.zeros(len(accepted), dtype=np.int64)  # [P]
    if lookup is not None:
        outcomes = table.lookup_outcomes(lookup.min_ngram, lookup.max_ngram)
        assert outcomes is not None  # the scorer checked
        drafted = np.minimum(outcomes.proposed, lookup.tokens)
    leaves = scorer.ends_in_leaf(tree, drafted)[visited]
    return Walk(int((1 + accepted[visited]).sum()), len(visited), drafted[visited], leaves, np.asarray(visited))


@dataclass(frozen=True)
class WalkOptimum:
    """The best tree the walk-consistent rounds found, scored by the walk itself."""

    tree: tuple[Path_, ...]
    walk: Walk
    value: float  # the walk's tokens per step, or with a profile its predicted tokens per second
    rounds: int  # position averages solved before the trees repeated


def walk_value(table: AccuracyTable, tree: Sequence[Path_], lookup: LookupConfig | None,
               profile: LatencyProfile | None) -> tuple[Walk, float]:
    result = walk(table, tree, lookup)
    if profile is None:
        return result, result.tokens_per_step
    seconds = profile.mean_step_seconds(tree, result.chains, lookup is not None, leaves=result.leaves)
    return result, result.tokens_per_step / seconds


def walk_optimum(
    table: AccuracyTable, budget: int, profile: LatencyProfile | None = None, lookup: LookupConfig | None = None,
    engine: str = "none", max_rounds: int = 8,
) -> WalkOptimum:
    """Optimise for the walk, which no node-additive formula is: solve the position average
    exactly (:mod:`optimizer.exact`) with every position weighted 1 where the previous round's
    tree starts a step and 0 where it skips, until a tree repeats; keep the tree the walk scores
    best. A fixed point is consistent (its own visited positions rate it best among all trees),
    not proven optimal for the walk; its figure is the walk's own."""
    weights: np.ndarray | None = None
    seen: list[tuple[Path_, ...]] = []
    best: WalkOptimum | None = None
    for rounds in range(1, max_rounds + 1):
        if profile is None:
            tree = exact_optimum(table, budget, "empirical", engine, lookup, weights).tree
        else:
            tree = speed_optimum(table, profile, budget, "empirical", engine, lookup, weights).tree
        result, value = walk_value(table, tree, lookup, profile)
        if best is None or value > best.value:
            best = WalkOptimum(tree, result, value, rounds)
        if tree in seen:
            break
        seen.append(tree)
        weights = np.zeros(len(table.ranks))  # type: ignore[arg-type]  # the walk checked the ranks
        weights[result.visited] = 1.0
    assert best is not None
    return dataclasses.replace(best, rounds=rounds)
