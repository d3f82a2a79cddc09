"""Exact optimum trees for a node budget, and the curve E(N) of the best expected length.

Why greedy is exact (both length models). Write ``E(T) = 1 + sum_{p in T} w(p)`` with
``w(p)`` the probability that node p is on the accepted path (:mod:`optimizer.expected_length`).
In both models ``w(child) <= w(parent)``: under independence the child's value is the parent's
times an accuracy <= 1; under the empirical replay "the rank vector starts with the child's path"
implies "it starts with the parent's path". Order all candidate nodes by the key
``(-w(p), depth(p), p)``; a parent's key is strictly smaller than each child's (w no smaller,
depth smaller). Let S_N be the first N nodes in this order.

1. S_N is a valid tree: every node's parent precedes it, so S_N is prefix-closed.
2. No set of N nodes, tree or not, has a larger sum of w than the N largest values, which is
   S_N's sum; hence S_N is optimal among trees of at most N nodes.

Best-first expansion from the root (always take the frontier node with the smallest key) visits
nodes in exactly that order, because every node not yet taken has an ancestor on the frontier
whose key is no larger. So one expansion to N_max nodes yields the optimum for every N <= N_max
(the optima are nested) and ``E(N) = 1 + cumulative sum of the taken values``, a concave curve.
(The brief that asked for this module expected greedy to fail for the empirical model; the
argument above shows it does not: the replay is node-additive with monotone values too.)

Greedy stops being exact when the feasible set is not "any prefix-closed set": vLLM's product
trees (every node of a level has children of ranks 0..c-1). Those are few (one per branching
vector within the budget), so their optimum is found by scoring every one of them.

The speed objective ``E(T) / latency(|T| + 1)`` depends on T only through E and the size, so its
optimum is the best tree of the size N that maximises ``E*(N) / latency(N + 1)``: also exact.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np

from medusa_core.spec.trees import validate_tree

from .accuracy import AccuracyTable
from .engines import check_engine, check_engine_budget, product_tree, product_tree_size, uniform_branchings
from .expected_length import LengthModel, TreeScorer, resolve_length_model
from .profile import LatencyProfile

Path_ = tuple[int, ...]
ExactObjective = Literal["length", "speed"]


@dataclass(frozen=True)
class ExactOptimum:
    """The optimal tree for one objective, and the best expected length for every budget."""

    tree: tuple[Path_, ...]
    expected_length: float  # tokens per step of ``tree``
    value: float  # objective value of ``tree``: expected length, or predicted tokens per second
    objective: ExactObjective
    curve: np.ndarray = field(compare=False)  # [budget + 1]: best expected length with at most N nodes
    model: LengthModel
    engine: str


@dataclass(frozen=True)
class _Candidates:
    """Best tree of each exact size that the search space allows (sizes ascending)."""

    sizes: np.ndarray  # [m] int
    lengths: np.ndarray  # [m] expected length of the best tree of that size
    tree_at: Callable[[int], tuple[Path_, ...]]  # index into sizes -> that tree

    def curve(self, budget: int) -> np.ndarray:
        best = np.ones(budget + 1)  # [budget + 1]; the empty tree gives 1 token per step
        best[self.sizes] = np.maximum(best[self.sizes], self.lengths)
        return np.maximum.accumulate(best)


def greedy_order(scorer: TreeScorer, max_nodes: int) -> tuple[tuple[Path_, ...], np.ndarray]:
    """The first ``max_nodes`` nodes in the optimal order (see module docstring) and their values."""
    top_k, max_depth = scorer.table.top_k, scorer.table.num_heads
    frontier: list[tuple[float, int, Path_]] = []

    def push_children(parent: Path_) -> None:
        if len(parent) >= max_depth:
            return
        children = [parent + (rank,) for rank in range(top_k)]
        for child, value in zip(children, scorer.node_values(children)):
            heapq.heappush(frontier, (-float(value), len(child), child))

    push_children(())
    order: list[Path_] = []
    values: list[float] = []
    while frontier and len(order) < max_nodes:
        negative_value, _, path = heapq.heappop(frontier)
        order.append(path)
        values.append(-negative_value)
        push_children(path)
    return tuple(order), np.array(values)


def _greedy_candidates(scorer: TreeScorer, budget: int) -> _Candidates:
    order, values = greedy_order(scorer, budget)
    sizes = np.arange(len(order) + 1)
    lengths = 1.0 + np.concatenate([[0.0], np.cumsum(values)])
    return _Candidates(sizes, lengths, lambda index: order[: sizes[index]])


def _product_candidates(scorer: TreeScorer, budget: int) -> _Candidates:
    table = scorer.table
    branchings = list(uniform_branchings(table.top_k, table.num_heads, budget))
    trees = [product_tree(b) for b in branchings]
    lengths = scorer.expected_lengths(trees)
    sizes = np.array([product_tree_size(b) for b in branchings])
    best: dict[int, int] = {}
    for index, size in enumerate(sizes):
        if size not in best or lengths[index] > lengths[best[size]]:
            best[int(size)] = index
    chosen = [best[s] for s in sorted(best)]
    return _Candidates(sizes[chosen], lengths[chosen], lambda index: trees[chosen[index]])


def _candidates(table: AccuracyTable, budget: int, model: str, engine: str) -> tuple[_Candidates, LengthModel]:
    check_engine_budget(engine, budget)
    length_model = resolve_length_model(table, model)
    scorer = TreeScorer(table, length_model)
    if check_engine(engine) == "vllm":
        return _product_candidates(scorer, budget), length_model
    return _greedy_candidates(scorer, budget), length_model


def exact_optimum(
    table: AccuracyTable, budget: int, model: str = "independence", engine: str = "none"
) -> ExactOptimum:
    """The tree of at most ``budget`` nodes with the largest expected length (exact), and E(N)."""
    candidates, length_model = _candidates(table, budget, model, engine)
    best = int(np.argmax(candidates.lengths))
    length = float(candidates.lengths[best])
    return ExactOptimum(
        tree=validate_tree(candidates.tree_at(best)),
        expected_length=length,
        value=length,
        objective="length",
        curve=candidates.curve(budget),
        model=length_model,
        engine=engine,
    )


def speed_optimum(
    table: AccuracyTable,
    profile: LatencyProfile,
    budget: int,
    model: str = "independence",
    engine: str = "none",
) -> ExactOptimum:
    """The tree of at most ``budget`` nodes with the highest predicted tokens per second (exact)."""
    candidates, length_model = _candidates(table, budget, model, engine)
    speeds = candidates.lengths / profile.latencies(candidates.sizes + 1)
    best = int(np.argmax(speeds))
    return ExactOptimum(
        tree=validate_tree(candidates.tree_at(best)),
        expected_length=float(candidates.lengths[best]),
        value=float(speeds[best]),
        objective="speed",
        curve=candidates.curve(budget),
        model=length_model,
        engine=engine,
    )
