"""Hypothesis strategies shared by the optimizer tests (trees, tables), and checks of the strategies."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from medusa_core.spec.trees import validate_tree
from optimizer import AccuracyTable, accuracy_from_ranks

Path_ = tuple[int, ...]


@st.composite
def trees(draw: st.DrawFn, max_nodes: int = 24, top_k: int = 4, max_depth: int = 4) -> tuple[Path_, ...]:
    """Random valid trees: each new node is a child of the root or of an earlier node."""
    paths: list[Path_] = []
    for _ in range(draw(st.integers(0, max_nodes))):
        parent = draw(st.sampled_from([(), *paths]))
        child = parent + (draw(st.integers(0, top_k - 1)),)
        if len(child) <= max_depth and child not in paths:
            paths.append(child)
    return validate_tree(paths)


@st.composite
def independence_tables(draw: st.DrawFn, heads: int = 4, top_k: int = 4) -> AccuracyTable:
    rows = []
    for _ in range(heads):
        weights = draw(st.lists(st.floats(0.0, 1.0), min_size=top_k + 1, max_size=top_k + 1))
        total = sum(weights) or 1.0
        rows.append([w / total for w in weights[:top_k]])  # the last weight is "not in the top-k"
    return AccuracyTable(acc=rows, model="random")


@st.composite
def empirical_tables(draw: st.DrawFn, heads: int = 4, top_k: int = 4) -> AccuracyTable:
    seed = draw(st.integers(0, 2**32 - 1))
    positions = draw(st.integers(1, 300))
    rng = np.random.default_rng(seed)
    ranks = np.minimum(rng.geometric(0.5, size=(positions, heads)) - 1, top_k)  # rank top_k = miss
    return accuracy_from_ranks(ranks, top_k, model="random-empirical")


@given(trees())
def test_tree_strategy_yields_valid_trees(tree: tuple[Path_, ...]) -> None:
    assert validate_tree(tree, num_heads=4, top_k=4) == tree


@given(independence_tables(), empirical_tables())
def test_table_strategies_yield_valid_tables(independent: AccuracyTable, empirical: AccuracyTable) -> None:
    assert independent.acc_array.sum(axis=1).max() <= 1 + 1e-9
    assert empirical.has_ranks and empirical.num_heads == 4
