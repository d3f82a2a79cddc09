"""The Optuna search space over tree shapes: trial parameters -> a valid tree, and back.

Every decoded tree is valid by construction (prefix-closed, depth <= max_depth, ranks < top_k,
at most ``budget`` nodes), whatever the parameter values. A tree is built in two parts:

* ``pinned`` nodes given explicitly (``pinned+1`` is log-uniform in [1, budget + 1], so few pins
  are the norm): slot i = 1..pinned holds ``pin{i}`` = parent * top_k + rank and adds the child
  of that rank to the node made by slot ``parent`` < i (0 = the root). Every tree is its nodes
  listed breadth-first, so with all slots pinned this expresses *any* valid tree. A slot whose
  parent was skipped, whose parent is at max_depth or whose child already exists is skipped.
* the rest grown best-first from ranked costs (sampler-friendly, a few dozen floats): a cost per
  depth ``depth_cost{d}`` and a non-negative cost per rank step ``rank_gap{d}_{j}`` (rank r at
  depth d costs ``depth_cost{d} + rank_gap{d}_0 + ... + rank_gap{d}_{r-1}``); a path costs the sum
  over its positions, and the tree repeatedly takes the cheapest node whose parent is in until it
  has the wanted number of nodes. With costs ``-log acc`` this is exactly the independence
  optimum, and small changes in the costs change only marginal nodes, which is what lets a
  sampler converge. The cost parameters appear in every trial, so Optuna's multivariate TPE
  models them jointly; the slot parameters exist only in trials that pin nodes.

For the vLLM engine the space is its product trees instead: ``branch{d}`` = number of children of
every node of level d (at least 1 at the root; 0 ends the tree), cut to the budget.

The node count is the parameter ``nodes`` when ``sized`` (speed and multi-objective searches);
otherwise it is the budget, since adding a node never lowers the expected length.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Iterable, Sequence

import optuna

from medusa_core.spec.trees import validate_tree

from .engines import Engine, level_branching, product_tree

Path_ = tuple[int, ...]
MAX_COST = 5.0  # upper bound of depth_cost / rank_gap; e**-5 ~ 0.7% relative acceptance


@dataclass(frozen=True)
class TreeSpace:
    top_k: int
    max_depth: int
    budget: int
    engine: Engine = "none"
    sized: bool = False

    def suggest_tree(self, trial: optuna.Trial | optuna.trial.FixedTrial) -> tuple[Path_, ...]:
        """Sample (or, with a FixedTrial, decode) a tree."""
        if self.engine == "vllm":
            return self._suggest_product_tree(trial)
        nodes = trial.suggest_int("nodes", 1, self.budget) if self.sized else self.budget
        costs = self._suggest_costs(trial)
        pinned = self._suggest_pinned(trial, min(trial.suggest_int("pinned+1", 1, self.budget + 1, log=True) - 1, nodes))
        return grow_best_first(costs, nodes, pinned)

    def _suggest_costs(self, trial: optuna.Trial | optuna.trial.FixedTrial) -> list[list[float]]:
        costs = []  # [max_depth][top_k]: cost of rank r at depth d
        for d in range(self.max_depth):
            depth_cost = trial.suggest_float(f"depth_cost{d}", 0.0, MAX_COST)
            gaps = [trial.suggest_float(f"rank_gap{d}_{j}", 0.0, MAX_COST) for j in range(self.top_k - 1)]
            costs.append([depth_cost + step for step in accumulate([0.0] + gaps)])
        return costs

    def _suggest_pinned(self, trial: optuna.Trial | optuna.trial.FixedTrial, slots: int) -> set[Path_]:
        made: list[Path_ | None] = [()]  # node made by each slot; slot 0 is the root
        pinned: set[Path_] = set()
        for slot in range(1, slots + 1):
            parent_slot, rank = divmod(trial.suggest_int(f"pin{slot}", 0, slot * self.top_k - 1), self.top_k)
            parent = made[parent_slot]
            child = None if parent is None or len(parent) >= self.max_depth else parent + (rank,)
            made.append(None if child in pinned else child)
            if child is not None:
                pinned.add(child)
        return pinned

    def _suggest_product_tree(self, trial: optuna.Trial | optuna.trial.FixedTrial) -> tuple[Path_, ...]:
        branching: list[int] = []
        size, level = 0, 1
        for d in range(self.max_depth):
            count = trial.suggest_int(f"branch{d}", 1 if d == 0 else 0, self.top_k)
            count = min(count, (self.budget - size) // level)  # cut to the budget
            if count == 0:
                break
            branching.append(count)
            level *= count
            size += level
        return product_tree(branching)

    def params_for(self, paths: Sequence[Sequence[int]]) -> dict[str, Any]:
        """Parameters that pin every node of this tree (for ``study.enqueue_trial``).

        They decode to exactly this tree when the node count is its size (``sized`` spaces, or
        a tree of ``budget`` nodes); otherwise the remaining nodes grow from the costs, which the
        sampler fills in.
        """
        tree = validate_tree(paths, self.max_depth, self.top_k)
        if len(tree) > self.budget:
            raise ValueError(f"tree has {len(tree)} nodes, more than the budget {self.budget}")
        if self.engine == "vllm":
            branching = level_branching(tree)
            return {f"branch{d}": c for d, c in enumerate(branching)} | (
                {f"branch{len(branching)}": 0} if len(branching) < self.max_depth else {}
            )
        params: dict[str, Any] = {"pinned+1": len(tree) + 1} | ({"nodes": len(tree)} if self.sized else {})
        index = {(): 0} | {p: i + 1 for i, p in enumerate(tree)}
        for slot, path in enumerate(tree, start=1):
            params[f"pin{slot}"] = index[path[:-1]] * self.top_k + path[-1]
        return params


def grow_best_first(
    costs: Sequence[Sequence[float]], nodes: int, start: Iterable[Path_] = ()
) -> tuple[Path_, ...]:
    """Grow a tree from ``start`` (a prefix-closed set, possibly empty) to ``nodes`` nodes, always
    adding the cheapest node whose parent is already in.

    ``costs[d][r]`` is the cost of rank r at depth d; a path costs the sum over its positions.
    Ties go to the shallower, then lexicographically smaller path.
    """
    tree = set(start)
    frontier: list[tuple[float, int, Path_]] = []

    def push_children(path: Path_, cost: float) -> None:
        if len(path) < len(costs):
            for rank, step in enumerate(costs[len(path)]):
                child = path + (rank,)
                if child in tree:
                    push_children(child, cost + step)
                else:
                    heapq.heappush(frontier, (cost + step, len(child), child))

    push_children((), 0.0)
    while frontier and len(tree) < nodes:
        cost, _, path = heapq.heappop(frontier)
        tree.add(path)
        push_children(path, cost)
    return validate_tree(tree)
