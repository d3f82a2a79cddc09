"""Expected length: the independence formula, the empirical replay, monotonicity, batch scoring."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medusa_core.spec.trees import MC_SIM_7B_63, TreeError
from optimizer import (
    AccuracyTable,
    LengthModelError,
    TreeScorer,
    accuracy_from_ranks,
    expected_length,
    expected_lengths,
    reference_table,
    replay_accepted,
    resolve_length_model,
)
from test_optimizer_strategies import empirical_tables, independence_tables, trees

TABLE = AccuracyTable(acc=[[0.5, 0.2], [0.4, 0.1]])


def brute_force_replay(tree: tuple, ranks: np.ndarray) -> float:
    """Mean over positions of 1 + the longest prefix of the rank vector present in the tree."""
    members = set(tree)
    total = 0
    for vector in ranks.tolist():
        accepted = 0
        while accepted < len(vector) and tuple(vector[: accepted + 1]) in members:
            accepted += 1
        total += 1 + accepted
    return total / len(ranks)


def test_independence_formula_by_hand() -> None:
    tree = [[0], [1], [0, 0], [0, 1], [1, 0]]
    by_hand = 1 + 0.5 + 0.2 + 0.5 * 0.4 + 0.5 * 0.1 + 0.2 * 0.4
    assert math.isclose(expected_length(tree, TABLE), by_hand)
    assert expected_length([], TABLE) == 1.0


def test_nodes_beyond_the_table_count_as_never_accepted() -> None:
    assert math.isclose(expected_length([[0], [2], [0, 0], [0, 0, 0]], TABLE), 1 + 0.5 + 0.2)


def test_invalid_trees_are_rejected() -> None:
    with pytest.raises(TreeError, match="no parent"):
        expected_length([[0, 0]], TABLE)


def test_empirical_replay_by_hand() -> None:
    ranks = [[0, 0], [0, 1], [1, 0], [-1, 0]]
    table = accuracy_from_ranks(ranks, top_k=2)
    tree = [[0], [0, 0], [1]]
    assert replay_accepted(tree, table).tolist() == [2, 1, 1, 0]
    assert math.isclose(expected_length(tree, table, "empirical"), 1 + (2 + 1 + 1 + 0) / 4)


@settings(max_examples=60, deadline=None)
@given(empirical_tables(), trees())
def test_empirical_node_sum_equals_brute_force_replay(table: AccuracyTable, tree: tuple) -> None:
    fast = expected_length(tree, table, "empirical")
    assert math.isclose(fast, brute_force_replay(tree, table.ranks), rel_tol=1e-12)
    assert math.isclose(fast, 1 + replay_accepted(tree, table).mean(), rel_tol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.one_of(independence_tables(), empirical_tables()), trees(), st.data())
def test_adding_a_node_never_lowers_the_expected_length(table: AccuracyTable, tree: tuple, data) -> None:
    model = resolve_length_model(table)
    parent = data.draw(st.sampled_from([p for p in ((), *tree) if len(p) < 4]))
    child = parent + (data.draw(st.integers(0, 3)),)
    grown = tree if child in tree else (*tree, child)
    assert expected_length(grown, table, model) >= expected_length(tree, table, model) - 1e-12


@settings(max_examples=30, deadline=None)
@given(st.one_of(independence_tables(), empirical_tables()), st.lists(trees(), min_size=1, max_size=8))
def test_batch_scoring_matches_single_scoring(table: AccuracyTable, many: list) -> None:
    model = resolve_length_model(table)
    batch = expected_lengths(many, table, model)
    assert np.allclose(batch, [expected_length(t, table, model) for t in many])


def test_length_model_resolution() -> None:
    empirical = accuracy_from_ranks([[0, 1]], top_k=2)
    assert resolve_length_model(empirical) == "empirical"
    assert resolve_length_model(TABLE) == "independence"
    with pytest.raises(LengthModelError, match="needs a table with per-position 'ranks'"):
        resolve_length_model(TABLE, "empirical")
    with pytest.raises(LengthModelError, match="unknown length model"):
        resolve_length_model(TABLE, "magic")


def test_scores_thousands_of_trees_per_second() -> None:
    scorer = TreeScorer(reference_table("vicuna-7b"))
    many = [MC_SIM_7B_63] * 4000
    start = time.perf_counter()
    trusted = scorer.expected_lengths(many, validate=False)
    fast = time.perf_counter() - start
    checked = scorer.expected_lengths(many[:500])
    slow = time.perf_counter() - start - fast
    print(f"63-node trees scored: {len(many) / fast:.0f}/s without validation, {500 / slow:.0f}/s with it")
    assert np.allclose(trusted, trusted[0]) and np.allclose(checked, trusted[0])
    assert fast < 2.0  # thousands per second even on a loaded 2-core machine
