"""The context lookup in the optimiser: replay, exact optimum (knapsack), decoding walk, prediction."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medusa_core.spec.lookup import LookupConfig
from optimizer.accuracy import AccuracyError, LookupOutcomes, accuracy_from_ranks, table_from_json
from optimizer.exact import exact_optimum, knapsack_candidates, speed_optimum
from optimizer.expected_length import LengthModelError, TreeScorer
from optimizer.predict import predict_setup
from optimizer.profile import LatencyProfile
from optimizer.walk import walk, walk_optimum, walk_positions

LOOKUP = LookupConfig(4, 3, 2)


def table_with_lookup(ranks, right, proposed=None, segments=None, top_k=3):
    proposed = right if proposed is None else proposed
    outcomes = LookupOutcomes(2, 3, 4, np.asarray(proposed), np.asarray(right))
    return accuracy_from_ranks(ranks, top_k, segments=segments or (len(ranks),), lookups=(outcomes,))


def test_the_step_keeps_the_longer_of_tree_and_lookup():
    table = table_with_lookup([[0, 0], [1, -1], [0, 1], [-1, -1]], [1, 2, 0, 3])
    scorer = TreeScorer(table, "empirical", LOOKUP)
    tree = [(0,), (0, 0), (1,)]
    assert scorer.replay_accepted(tree).tolist() == [2, 2, 1, 3]
    assert scorer.expected_length(tree) == pytest.approx(1 + np.mean([2, 2, 1, 3]))
    short = TreeScorer(table, "empirical", LookupConfig(1, 3, 2))  # a 1-token chain is right for at most 1
    assert short.replay_accepted(tree).tolist() == [2, 1, 1, 1]


def test_lookup_needs_recorded_outcomes_of_its_ngram_range_and_the_replay():
    table = table_with_lookup([[0, 0]], [1])
    with pytest.raises(LengthModelError, match="1-2-token"):
        TreeScorer(table, "empirical", LookupConfig(4, 2, 1))
    with pytest.raises(LengthModelError, match="empirical"):
        TreeScorer(table, "independence", LOOKUP)
    with pytest.raises(LengthModelError, match="up to 4 tokens"):
        TreeScorer(table, "empirical", LookupConfig(5, 3, 2))


def test_outcomes_and_segments_are_validated_and_round_trip():
    table = table_with_lookup([[0, 0], [1, 1]], [1, 0], [2, 0], segments=(1, 1))
    again = table_from_json(table.to_json())
    assert again.segments == (1, 1) and again.lookup_outcomes(2, 3).proposed.tolist() == [2, 0]
    with pytest.raises(AccuracyError, match="right <= proposed"):
        table_with_lookup([[0, 0]], [2], [1])
    with pytest.raises(AccuracyError, match="segments"):
        table_with_lookup([[0, 0], [1, 1]], [0, 0], segments=(3,))
    with pytest.raises(AccuracyError, match="cover"):
        accuracy_from_ranks([[0, 0]], 3, lookups=(LookupOutcomes(2, 3, 4, np.array([0, 0]), np.array([0, 0])),))


def test_greedy_is_not_exact_with_a_lookup_and_the_knapsack_is():
    # The lookup is right for one token wherever head 0 is: node (0,) adds nothing, (0, 0) a lot.
    ranks = [[0, 0]] * 6 + [[1, -1]] * 2
    table = table_with_lookup(ranks, [1] * 6 + [0] * 2)
    optimum = exact_optimum(table, 2, "empirical", lookup=LOOKUP)
    assert set(optimum.tree) == {(0,), (0, 0)}
    assert optimum.expected_length == pytest.approx(1 + 6 * 2 / 8)


def all_trees(top_k, depth, budget):
    nodes = [p for d in range(1, depth + 1) for p in itertools.product(range(top_k), repeat=d)]
    for size in range(budget + 1):
        for subset in itertools.combinations(nodes, size):
            chosen = set(subset)
            if all(p[:-1] in chosen or len(p) == 1 for p in chosen):
                yield subset


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(-1, 1), st.integers(-1, 1), st.integers(0, 3)), min_size=1, max_size=12),
       st.integers(1, 4))
def test_the_knapsack_matches_brute_force_on_every_budget(rows, budget):
    ranks = [[a, b] for a, b, _ in rows]
    table = table_with_lookup(ranks, [r for *_, r in rows], top_k=2)
    scorer = TreeScorer(table, "empirical", LOOKUP)
    best = np.full(budget + 1, -np.inf)
    for tree in all_trees(2, 2, budget):
        best[len(tree)] = max(best[len(tree)], scorer.expected_length(tree))
    candidates = knapsack_candidates(scorer, budget)
    assert np.allclose(candidates.curve(budget, 1 + scorer.lookup_tokens_per_step), np.maximum.accumulate(best))
    for index, size in enumerate(candidates.sizes):
        tree = candidates.tree_at(index)
        assert len(tree) == size and scorer.expected_length(tree) == pytest.approx(candidates.lengths[index])


def test_the_walk_visits_only_where_steps_start():
    assert walk_positions(np.array([2, 5, 5, 0, 1, 0, 0]), (5, 2)) == [0, 3, 4, 5, 6]
    # Position 0 accepts 2 (tree), so positions 1-2 (both right for 2) are skipped.
    table = table_with_lookup([[0, 0], [0, 0], [0, 0], [-1, -1], [-1, -1]], [0] * 5, segments=(5,))
    result = walk(table, [(0,), (0, 0)])
    assert (result.tokens, result.steps) == (5, 3)
    assert TreeScorer(table, "empirical").expected_length([(0,), (0, 0)]) == pytest.approx(1 + 6 / 5)


def test_prediction_walks_and_prices_the_chain_it_drafted():
    table = table_with_lookup([[0, 0], [-1, -1], [-1, -1], [-1, -1]], [0, 0, 2, 0], [0, 3, 4, 0], segments=(4,))
    profile = LatencyProfile((1, 16), (0.01, 0.025), pass_seconds=(0.01, 0.025), depth_seconds=0.001,
                             internal_seconds=0.0, lookup_seconds=0.0005)
    prediction = predict_setup(table, profile, [(0,), (0, 0)], LOOKUP)
    # steps at positions 0 (tree: 2 accepted), 3 (nothing): 4 tokens in 2 steps; chains drafted 0 and 0
    assert prediction.length_model == "walk" and prediction.tokens_per_step == pytest.approx(2.0)
    assert prediction.seconds_per_step == pytest.approx(0.01 + 0.001 * 2 + 0.001 * 2 + 0.0005)
    assert prediction.tokens_per_second == pytest.approx(2.0 / prediction.seconds_per_step)


def test_the_speed_optimum_pays_for_depth():
    table = accuracy_from_ranks([[0, 0, 0]] * 3 + [[0, -1, -1]] * 7, 2)
    cheap = LatencyProfile((1, 8), (0.01, 0.01), pass_seconds=(0.01, 0.01), depth_seconds=0.0)
    costly = LatencyProfile((1, 8), (0.01, 0.01), pass_seconds=(0.01, 0.01), depth_seconds=0.005)
    assert max(len(p) for p in speed_optimum(table, cheap, 4, "empirical").tree) == 3
    assert speed_optimum(table, costly, 4, "empirical").tree == ((0,),)  # 2.0 / 0.015 beats 2.6 / 0.025 and 1 / 0.01


def test_the_walk_optimum_is_scored_by_the_walk_and_beats_the_position_average_tree():
    rng = np.random.default_rng(0)
    ranks = rng.integers(-1, 3, size=(300, 3)).tolist()
    right = rng.integers(0, 4, size=300)
    table = table_with_lookup(ranks, right.tolist(), segments=(100, 100, 100))
    for lookup in (None, LOOKUP):
        found = walk_optimum(table, 6, lookup=lookup)
        assert found.value == pytest.approx(walk(table, found.tree, lookup).tokens_per_step)
        average = exact_optimum(table, 6, "empirical", lookup=lookup).tree
        assert found.value >= walk(table, average, lookup).tokens_per_step - 1e-12
        assert 1 <= found.rounds <= 8 and len(found.tree) <= 6


def test_position_weights_reweigh_the_replay():
    table = table_with_lookup([[0, 0], [1, 1], [1, -1]], [0, 0, 0])
    scorer = TreeScorer(table, "empirical", weights=np.array([0.0, 1.0, 1.0]))
    assert scorer.expected_length([(1,), (1, 1)]) == pytest.approx(1 + 1 + 0.5)
    with pytest.raises(LengthModelError, match="weights"):
        TreeScorer(table, "empirical", weights=np.array([1.0, 1.0]))


def test_tuning_starts_from_the_walk_optima_with_the_heads_lookup():
    from optimizer.tune import exact_setups

    rng = np.random.default_rng(1)
    table = table_with_lookup(rng.integers(-1, 3, size=(120, 2)).tolist(), rng.integers(0, 3, size=120).tolist(),
                              segments=(60, 60))
    setups = exact_setups(table, 4, LOOKUP)
    assert [s.tree for s in setups] == [walk_optimum(table, n, lookup=LOOKUP).tree for n in (4, 1, 2)]
    assert all(s.lookup == LOOKUP for s in setups)


def test_a_step_ends_in_a_leaf_where_its_accepted_node_has_no_children():
    table = table_with_lookup([[0, 0], [0, 1], [1, 0], [-1, -1], [-1, -1]], [0, 0, 0, 2, 1], segments=(5,))
    scorer = TreeScorer(table, "empirical", LOOKUP)
    tree = [(0,), (1,), (0, 0)]
    # (0, 0) is a leaf; (0,) has a child; (1,) is a leaf; lookups right for 2 of a 2-token chain, 1 of 3
    drafted = np.array([0, 0, 0, 2, 3])
    assert scorer.ends_in_leaf(tree, drafted).tolist() == [True, False, True, True, False]
