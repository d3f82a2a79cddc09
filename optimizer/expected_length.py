"""Expected accepted length of a tree: the independence model and the empirical replay.

Conventions (used throughout the optimizer):

* A tree is a prefix-closed set of rank paths (Medusa ``medusa_choices``); its *nodes* are the
  paths, the root (the base model's own next token) is implicit and not counted.
* The *accepted nodes* of a step are the tree nodes on the accepted path (0 .. depth).
* The *expected length* ``E`` of a tree is the expected number of tokens one decoding step
  emits: ``E = 1 + E[accepted nodes]``, the root always being emitted. This is Medusa's
  "expected accepted length" formula and the "tokens per step" the decoder reports.

Both models are node-additive: ``E = 1 + sum over nodes p of w(p)``, where ``w(p)`` is the
probability that node p lies on the accepted path.

* Independence model: ``w(p) = prod_d acc[d][p_d]`` (heads assumed independent).
* Empirical replay: on a recorded position with rank vector ``v`` (``v[h]`` = rank of the true
  token in head h's top-k), the accepted path is the longest prefix of ``v`` present in the tree;
  because the tree is prefix-closed, its length equals the number of tree nodes that are prefixes
  of ``v``. Averaging over positions gives ``w(p)`` = fraction of positions whose rank vector
  starts with p. :func:`replay_accepted` computes the per-position figure directly.

With a context lookup of L tokens (empirical replay only; the table records per position the
lookup's right length l): the step keeps the longer of the tree's path and the lookup's chain, so
it accepts max(a, l'), l' = min(l, L). That is l' + #{tree nodes p on the path with |p| > l'},
still node-additive: ``E = 1 + mean(l') + sum of w'(p)``, w'(p) = fraction of positions whose rank
vector starts with p and whose l' < |p|. But w' is no longer monotone (a depth-2 node can beat
its parent when lookups are often right for one token), which :mod:`optimizer.exact` handles.

Nodes a table does not cover (rank >= top_k, or depth > number of heads) get ``w = 0``: the
figure is then a lower bound. In both models ``w(child) <= w(parent)``, which is what makes the
greedy optimum of :mod:`optimizer.exact` exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Literal, Sequence

import numpy as np

from medusa_core.spec.lookup import LookupConfig
from medusa_core.spec.trees import validate_tree

from .accuracy import AccuracyTable

LengthModel = Literal["independence", "empirical"]
LENGTH_MODELS: tuple[str, ...] = ("independence", "empirical")
Path_ = tuple[int, ...]


class LengthModelError(ValueError):
    """A length model that the table cannot support (e.g. empirical replay without rank vectors)."""


def resolve_length_model(table: AccuracyTable, model: str = "auto") -> LengthModel:
    """``auto`` picks the empirical replay when the table carries rank vectors, else independence."""
    if model == "auto":
        return "empirical" if table.has_ranks else "independence"
    if model not in LENGTH_MODELS:
        raise LengthModelError(f"unknown length model {model!r}; use auto, {' or '.join(LENGTH_MODELS)}")
    if model == "empirical" and not table.has_ranks:
        raise LengthModelError("the empirical replay needs a table with per-position 'ranks'")
    return model  # type: ignore[return-value]


def rank_matrix(paths: Sequence[Sequence[int]], width: int) -> np.ndarray:
    """Paths as an int array [n, width], padded with -1 (paths must be at most width long)."""
    matrix = np.full((len(paths), width), -1, dtype=np.int64)
    for i, path in enumerate(paths):
        matrix[i, : len(path)] = path
    return matrix


@dataclass(frozen=True)
class TreeScorer:
    """Scores trees under one table and one length model; build once, score many trees."""

    table: AccuracyTable
    model: LengthModel = "independence"
    lookup: LookupConfig | None = None  # the context lookup verified beside the tree (empirical only)
    # [P] how much each recorded position counts (empirical only; None: all alike), e.g. 1 where a
    # decoding walk starts a step and 0 where it skips (optimizer.walk)
    weights: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        resolve_length_model(self.table, self.model)
        if self.lookup is not None:
            self.lookup_right  # validates
        if self.weights is not None:
            positions = len(self.table.ranks) if self.table.ranks is not None else 0
            weights = np.asarray(self.weights, dtype=np.float64)
            bad = weights.shape != (positions,) or weights.min(initial=0) < 0 or not weights.sum()
            if self.model != "empirical" or bad:
                raise LengthModelError("position weights need the empirical replay, one weight >= 0 per recorded "
                                       "position, and a positive sum")
            object.__setattr__(self, "weights", weights / weights.sum())

    def position_mean(self, values: np.ndarray) -> float:
        """Mean of a per-position figure under the scorer's weights."""
        if not len(values):
            return 0.0
        return float(values.mean() if self.weights is None else values @ self.weights)

    @cached_property
    def lookup_right(self) -> np.ndarray:
        """[P] tokens the lookup gets right at each recorded position (zeros without a lookup)."""
        positions = len(self.table.ranks) if self.table.ranks is not None else 0
        if self.lookup is None:
            return np.zeros(positions, dtype=np.int64)
        if self.model != "empirical":
            raise LengthModelError("a context lookup is scored by the empirical replay only")
        outcomes = self.table.lookup_outcomes(self.lookup.min_ngram, self.lookup.max_ngram)
        if outcomes is None:
            raise LengthModelError(
                f"the accuracy table records no lookup outcomes for {self.lookup.min_ngram}-{self.lookup.max_ngram}"
                "-token matches: calibrate again (python -m medusa_core calibrate records them)")
        if self.lookup.tokens > outcomes.max_tokens:
            raise LengthModelError(f"the table records lookup chains up to {outcomes.max_tokens} tokens, "
                                   f"not {self.lookup.tokens}")
        return np.minimum(outcomes.right, self.lookup.tokens)

    @cached_property
    def lookup_tokens_per_step(self) -> float:
        """mean(l'): what the lookup alone adds to every step."""
        return self.position_mean(self.lookup_right)

    @cached_property
    def _base(self) -> int:
        """Digit base of path codes: digit 0 = no rank, digit r + 1 = rank r."""
        base = self.table.top_k + 1
        if base ** self.table.num_heads >= 2**62:
            raise LengthModelError(
                f"empirical replay supports (top_k + 1) ** heads < 2**62, got top_k {self.table.top_k}, "
                f"{self.table.num_heads} heads"
            )
        return base

    def _codes(self, ranks: np.ndarray) -> np.ndarray:
        """Code of every prefix: ranks [n, width] (-1 = absent) -> codes [n, width], -1 where invalid."""
        heads = min(ranks.shape[1], self.table.num_heads)
        covered = (ranks[:, :heads] >= 0) & (ranks[:, :heads] < self.table.top_k)  # [n, heads]
        valid = np.logical_and.accumulate(covered, axis=1)  # [n, heads]
        digits = np.where(valid, ranks[:, :heads] + 1, 0)  # [n, heads]
        weights = self._base ** np.arange(heads, dtype=np.int64)  # [heads]
        codes = np.full(ranks.shape, -1, dtype=np.int64)  # [n, width]
        codes[:, :heads] = np.where(valid, np.cumsum(digits * weights, axis=1), -1)
        return codes

    @cached_property
    def _prefix_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted unique prefix codes of the recorded rank vectors and their frequencies."""
        assert self.table.ranks is not None
        codes = self._codes(self.table.ranks)  # [P, H]
        depth = np.arange(1, codes.shape[1] + 1)  # [H]
        beyond_lookup = depth[None, :] > self.lookup_right[:, None]  # [P, H]
        counted = (codes >= 0) & beyond_lookup  # [P, H]
        weights = np.full(len(codes), 1 / len(codes)) if self.weights is None else self.weights  # [P]
        unique, inverse = np.unique(codes[counted], return_inverse=True)
        per_entry = np.broadcast_to(weights[:, None], codes.shape)[counted]
        shares = np.bincount(inverse, weights=per_entry, minlength=len(unique))
        return unique, shares

    def node_values(self, paths: Sequence[Sequence[int]]) -> np.ndarray:
        """w(p) for every path (no validation): probability that the node is on the accepted path."""
        width = max((len(p) for p in paths), default=1)
        ranks = rank_matrix(paths, width)  # [n, width]
        if self.model == "empirical":
            return self._empirical_values(ranks)
        return self._independence_values(ranks)

    def _independence_values(self, ranks: np.ndarray) -> np.ndarray:
        heads, top_k = self.table.num_heads, self.table.top_k
        width = ranks.shape[1]
        # Column 0: padding (factor 1); columns 1..top_k: acc; column top_k + 1: not covered (0).
        lookup = np.zeros((width, top_k + 2))  # [width, top_k + 2]
        lookup[:, 0] = 1.0
        lookup[: min(width, heads), 1 : top_k + 1] = self.table.acc_array[:width]
        columns = np.where(ranks < 0, 0, np.where(ranks < top_k, ranks + 1, top_k + 1))  # [n, width]
        return lookup[np.arange(width), columns].prod(axis=1)  # [n]

    def _empirical_values(self, ranks: np.ndarray) -> np.ndarray:
        depth = (ranks >= 0).sum(axis=1)  # [n]
        codes = self._codes(ranks)[np.arange(len(ranks)), np.maximum(depth - 1, 0)]  # [n]
        unique, freqs = self._prefix_counts
        if len(unique) == 0:
            return np.zeros(len(ranks))
        index = np.minimum(np.searchsorted(unique, codes), len(unique) - 1)
        return np.where((codes >= 0) & (unique[index] == codes), freqs[index], 0.0)

    def expected_length(self, paths: Iterable[Sequence[int]]) -> float:
        """E = 1 + sum of node values (tokens per step); the tree is validated first."""
        tree = validate_tree(paths)
        return 1.0 + self.lookup_tokens_per_step + float(self.node_values(tree).sum())

    def expected_lengths(self, trees: Sequence[Iterable[Sequence[int]]], validate: bool = True) -> np.ndarray:
        """E for many trees at once (one vectorised pass over all their nodes).

        ``validate=False`` skips the per-tree validity check (the slow part) for trees known to be
        valid, e.g. produced by :mod:`optimizer.space`.
        """
        checked = [validate_tree(t) for t in trees] if validate else [tuple(map(tuple, t)) for t in trees]
        owners = np.repeat(np.arange(len(checked)), [len(t) for t in checked])
        values = self.node_values([p for t in checked for p in t])
        return 1.0 + self.lookup_tokens_per_step + np.bincount(owners, weights=values, minlength=len(checked))

    def replay_accepted(self, paths: Iterable[Sequence[int]]) -> np.ndarray:
        """Accepted nodes per recorded position (empirical model): longest rank-vector prefix in the tree."""
        return np.maximum(self._heads_accepted(validate_tree(paths))[0], self.lookup_right)  # [P]

    def _heads_accepted(self, tree: tuple[Path_, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Per position: heads' nodes accepted [P] and the code of the last one [P] (-1: none)."""
        if not self.table.has_ranks:
            raise LengthModelError("replay needs a table with per-position 'ranks'")
        assert self.table.ranks is not None
        width = self.table.num_heads
        tree_codes = self._codes(rank_matrix([p for p in tree if len(p) <= width], width))
        members = np.unique(tree_codes[tree_codes >= 0])
        position_codes = self._codes(self.table.ranks)  # [P, H]
        accepted = np.isin(position_codes, members).sum(axis=1)  # [P]
        last = np.where(accepted > 0, position_codes[np.arange(len(accepted)), np.maximum(accepted - 1, 0)], -1)
        return accepted, last

    def ends_in_leaf(self, paths: Iterable[Sequence[int]], drafted: np.ndarray | None = None) -> np.ndarray:
        """[P] whether a step's accepted path ends in a leaf (a node without children, whose logits
        the decoder projects in a second pass): a heads' node no tree node extends, or the last
        token of the drafted lookup chain (``drafted`` [P]; the lookup's right length otherwise)."""
        tree = validate_tree(paths)
        heads, last = self._heads_accepted(tree)
        width = self.table.num_heads
        parents = {p[:-1] for p in tree if 1 < len(p) <= width}
        parent_codes = self._codes(rank_matrix(sorted(parents), width)) if parents else np.full((0, width), -1)
        internal = np.unique(parent_codes[parent_codes >= 0])
        heads_leaf = (heads > 0) & ~np.isin(last, internal)
        right = self.lookup_right
        chain_end = right == (right if drafted is None else drafted)
        return np.where(right > heads, chain_end & (right > 0), heads_leaf)


def expected_length(paths: Iterable[Sequence[int]], table: AccuracyTable, model: str = "independence") -> float:
    """Expected tokens per step of a tree (1 + expected accepted nodes) under the given model."""
    return TreeScorer(table, resolve_length_model(table, model)).expected_length(paths)


def expected_lengths(
    trees: Sequence[Iterable[Sequence[int]]], table: AccuracyTable, model: str = "independence"
) -> np.ndarray:
    """Expected tokens per step of many trees, vectorised."""
    return TreeScorer(table, resolve_length_model(table, model)).expected_lengths(trees)


def replay_accepted(paths: Iterable[Sequence[int]], table: AccuracyTable) -> np.ndarray:
    """Accepted nodes of the tree on every recorded position of the table (tokens = this + 1)."""
    return TreeScorer(table, "empirical").replay_accepted(paths)
