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

With a context lookup the replay's node values stop being monotone (see
:mod:`optimizer.expected_length`), so greedy is no longer exact. The problem is still "choose a
prefix-closed set of at most N nodes with the largest sum of values", a tree knapsack: a dynamic
programme over the trie of recorded rank prefixes (nodes no position reaches are worth 0 and
need not be considered) gives the optimum for every N exactly (:func:`knapsack_candidates`).

Speed. With a format-1 latency profile the objective ``E(T) / latency(|T| + 1)`` depends on T only
through E and the size: its optimum is the best tree of the size N maximising
``E*(N) / latency(N + 1)``, exact. The decoder's step cost (format 2) also grows with the heads'
depth D (heads computed down to it) and the internal nodes: for every depth limit D the best tree
of each size within it is found exactly as above and priced at depth D, so the optimum is exact
for the cost's size and depth terms; the internal-node term is priced on those trees as they are
(a cheaper tree of equal E with fewer internal nodes is not searched for).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np

from medusa_core.spec.lookup import LookupConfig
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

    def curve(self, budget: int, empty: float = 1.0) -> np.ndarray:
        best = np.full(budget + 1, empty)  # [budget + 1]; the empty tree's tokens per step
        best[self.sizes] = np.maximum(best[self.sizes], self.lengths)
        return np.maximum.accumulate(best)


def greedy_order(
    scorer: TreeScorer, max_nodes: int, max_depth: int | None = None
) -> tuple[tuple[Path_, ...], np.ndarray]:
    """The first ``max_nodes`` nodes in the optimal order (see module docstring) and their values;
    ``max_depth`` (default: every head) limits the tree's depth."""
    top_k = scorer.table.top_k
    max_depth = scorer.table.num_heads if max_depth is None else min(max_depth, scorer.table.num_heads)
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


def _greedy_candidates(scorer: TreeScorer, budget: int, max_depth: int | None = None) -> _Candidates:
    order, values = greedy_order(scorer, budget, max_depth)
    sizes = np.arange(len(order) + 1)
    lengths = 1.0 + scorer.lookup_tokens_per_step + np.concatenate([[0.0], np.cumsum(values)])
    return _Candidates(sizes, lengths, lambda index: order[: sizes[index]])


def recorded_prefixes(scorer: TreeScorer, max_depth: int) -> list[Path_]:
    """Every rank prefix (depth <= max_depth) some recorded position reaches: the nodes worth > 0."""
    assert scorer.table.ranks is not None
    found: set[Path_] = set()
    for vector in scorer.table.ranks[:, :max_depth].tolist():
        for depth, rank in enumerate(vector, start=1):
            if rank < 0:
                break
            found.add(tuple(vector[:depth]))
    return sorted(found, key=lambda p: (len(p), p))


def merge_child(best: np.ndarray, child: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """Max-plus convolution of a node's best sums by size with a child's; sizes above ``cap``
    dropped. Returns the merged sums and, per total size, how many nodes the child gave."""
    width = min(len(best) + len(child) - 1, cap + 1)
    merged = np.full(width, -np.inf)
    taken = np.zeros(width, dtype=np.int64)
    for j in range(min(len(child), width)):
        n = min(len(best), width - j)
        candidate = best[:n] + child[j]  # total sizes j .. j + n - 1
        better = candidate > merged[j : j + n]
        merged[j : j + n][better] = candidate[better]
        taken[j : j + n][better] = j
    return merged, taken


def knapsack_candidates(scorer: TreeScorer, budget: int, max_depth: int | None = None) -> _Candidates:
    """Exact best tree of every size up to ``budget`` for any node values (a tree knapsack over
    the recorded prefixes, children merged into parents deepest first)."""
    depth_limit = scorer.table.num_heads if max_depth is None else min(max_depth, scorer.table.num_heads)
    nodes = recorded_prefixes(scorer, depth_limit)
    values = dict(zip(nodes, scorer.node_values(nodes).tolist())) if nodes else {}
    children: dict[Path_, list[Path_]] = {}
    for node in nodes:
        children.setdefault(node[:-1], []).append(node)
    best: dict[Path_, np.ndarray] = {}
    choices: dict[Path_, list[tuple[Path_, np.ndarray]]] = {}
    for node in [*reversed(nodes), ()]:
        sums = np.array([0.0]) if node == () else np.array([-np.inf, values[node]])  # [size + 1]
        steps = []
        for child in children.get(node, []):
            sums, taken = merge_child(sums, best.pop(child), budget)
            steps.append((child, taken))
        if node != ():
            sums[0] = 0.0  # the node and its subtree left out
        best[node], choices[node] = sums, steps

    def tree_of(size: int) -> tuple[Path_, ...]:
        chosen: list[Path_] = []
        pending = [((), size)]
        while pending:
            node, total = pending.pop()  # total counts the node itself (the root: nothing)
            if node != ():
                chosen.append(node)
            for child, taken in reversed(choices[node]):
                if total < len(taken) and taken[total] > 0:
                    pending.append((child, int(taken[total])))
                    total -= int(taken[total])
        return tuple(sorted(chosen, key=lambda p: (len(p), p)))

    sums = best[()]
    sizes = np.flatnonzero(np.isfinite(sums))
    lengths = 1.0 + scorer.lookup_tokens_per_step + sums[sizes]
    return _Candidates(sizes, lengths, lambda index: tree_of(int(sizes[index])))


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


def _candidates(
    scorer: TreeScorer, budget: int, engine: str, max_depth: int | None = None
) -> _Candidates:
    """The best tree of each size (within ``max_depth``): greedy when the node values are
    monotone, the knapsack when a lookup makes them not; vLLM's product trees scored one by one."""
    check_engine_budget(engine, budget)
    if check_engine(engine) == "vllm":
        return _product_candidates(scorer, budget)
    if scorer.lookup is not None:
        return knapsack_candidates(scorer, budget, max_depth)
    return _greedy_candidates(scorer, budget, max_depth)


def _scorer(
    table: AccuracyTable, model: str, lookup: LookupConfig | None, weights: np.ndarray | None = None
) -> TreeScorer:
    return TreeScorer(table, resolve_length_model(table, model), lookup, weights)


def drafted_chains(scorer: TreeScorer) -> np.ndarray:
    """[P] lookup chain drafted at each recorded position (zeros without a lookup; one zero for a
    table without positions)."""
    positions = len(scorer.table.ranks) if scorer.table.has_ranks else 1  # type: ignore[arg-type]
    if scorer.lookup is None:
        return np.zeros(positions, dtype=np.int64)
    outcomes = scorer.table.lookup_outcomes(scorer.lookup.min_ngram, scorer.lookup.max_ngram)
    assert outcomes is not None  # the scorer checked
    return np.minimum(outcomes.proposed, scorer.lookup.tokens)


def mean_seconds(scorer: TreeScorer, profile: LatencyProfile, tree: tuple[Path_, ...], chains: np.ndarray) -> float:
    """Position-average seconds of a step with this tree: each position's drafted chain, and
    whether its accepted path ends in a leaf (when the profile prices that and the table can say)."""
    leaves = scorer.ends_in_leaf(tree, chains) if profile.leaf_seconds and scorer.table.has_ranks else None
    weights = scorer.weights if scorer.table.has_ranks else None
    return profile.mean_step_seconds(tree, chains, scorer.lookup is not None, weights, leaves)


def exact_optimum(
    table: AccuracyTable, budget: int, model: str = "independence", engine: str = "none",
    lookup: LookupConfig | None = None,
    weights: np.ndarray | None = None,
) -> ExactOptimum:
    """The tree of at most ``budget`` nodes with the largest expected length (exact), and E(N);
    with ``lookup``, tokens per step of the tree and that lookup together; ``weights`` weigh the
    recorded positions (empirical replay)."""
    scorer = _scorer(table, model, lookup, weights)
    candidates, length_model = _candidates(scorer, budget, engine), scorer.model
    best = int(np.argmax(candidates.lengths))
    length = float(candidates.lengths[best])
    return ExactOptimum(
        tree=validate_tree(candidates.tree_at(best)),
        expected_length=length,
        value=length,
        objective="length",
        curve=candidates.curve(budget, 1.0 + scorer.lookup_tokens_per_step),
        model=length_model,
        engine=engine,
    )


def speed_optimum(
    table: AccuracyTable,
    profile: LatencyProfile,
    budget: int,
    model: str = "independence",
    engine: str = "none",
    lookup: LookupConfig | None = None,
    weights: np.ndarray | None = None,
) -> ExactOptimum:
    """The tree of at most ``budget`` nodes with the highest predicted tokens per second (see the
    module docstring for what is exact with the decoder's step cost); with ``lookup``, of the tree
    and that lookup together; ``weights`` weigh the recorded positions (empirical replay)."""
    scorer = _scorer(table, model, lookup, weights)
    chains = drafted_chains(scorer)
    depths = [None] if not profile.has_step_model or engine == "vllm" else range(table.num_heads + 1)
    best_speed, best_tree, best_length, curve = -np.inf, (), 1.0, None
    for depth in depths:
        candidates = _candidates(scorer, budget, engine, depth)
        if depth is None or depth == table.num_heads:
            curve = candidates.curve(budget, 1.0 + scorer.lookup_tokens_per_step)
        for index, length in enumerate(candidates.lengths):
            tree = candidates.tree_at(index)
            speed = float(length) / mean_seconds(scorer, profile, tree, chains)
            if speed > best_speed:
                best_speed, best_tree, best_length = speed, tree, float(length)
    assert curve is not None
    return ExactOptimum(
        tree=validate_tree(best_tree),
        expected_length=best_length,
        value=best_speed,
        objective="speed",
        curve=curve,
        model=scorer.model,
        engine=engine,
    )
