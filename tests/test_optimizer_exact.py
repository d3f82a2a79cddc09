"""Exact optimum: Medusa's tree comparison, brute force on small spaces, vLLM and speed optima."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medusa_core.spec.trees import MC_SIM_7B_63, validate_tree
from optimizer import (
    AccuracyTable,
    EngineError,
    LatencyProfile,
    exact_optimum,
    expected_length,
    expected_lengths,
    level_branching,
    reference_table,
    resolve_length_model,
    speed_optimum,
    with_geometric_tail,
)
from test_optimizer_strategies import empirical_tables, independence_tables, trees


def all_trees(top_k: int, max_depth: int, max_nodes: int) -> list[tuple]:
    """Every valid tree with at most max_nodes nodes (brute force, small spaces only)."""
    universe = [()]
    for _ in range(max_depth):
        universe += [p + (r,) for p in universe if len(p) == len(universe[-1]) for r in range(top_k)]
    universe = sorted(set(universe) - {()}, key=lambda p: (len(p), p))
    found = []
    for n in range(max_nodes + 1):
        for subset in combinations(universe, n):
            members = set(subset)
            if all(len(p) == 1 or p[:-1] in members for p in subset):
                found.append(subset)
    return found


SMALL_TREES = all_trees(top_k=3, max_depth=2, max_nodes=5)


def test_exact_optimum_beats_mc_sim_7b_63_on_vicuna_7b() -> None:
    for table in (reference_table("vicuna-7b"), with_geometric_tail(reference_table("vicuna-7b"), 10)):
        optimum = exact_optimum(table, 63)
        medusa = expected_length(MC_SIM_7B_63, table)
        print(f"top_k {table.top_k}: exact optimum (63 nodes) {optimum.expected_length:.4f} "
              f"tokens/step vs mc_sim_7b_63 {medusa:.4f}")
        assert len(optimum.tree) == 63
        assert optimum.expected_length >= medusa


@settings(max_examples=25, deadline=None)
@given(st.one_of(independence_tables(heads=2, top_k=3), empirical_tables(heads=2, top_k=3)), st.integers(0, 5))
def test_greedy_equals_brute_force_optimum(table: AccuracyTable, budget: int) -> None:
    model = resolve_length_model(table)
    fitting = [t for t in SMALL_TREES if len(t) <= budget]
    brute = expected_lengths(fitting, table, model).max()
    if budget == 0:
        with pytest.raises(EngineError, match="budget must be >= 1"):
            exact_optimum(table, budget, model)
        return
    optimum = exact_optimum(table, budget, model)
    assert optimum.expected_length == pytest.approx(brute, abs=1e-12)
    assert expected_length(optimum.tree, table, model) == pytest.approx(optimum.expected_length, abs=1e-12)
    best_by_size = [expected_lengths([t for t in SMALL_TREES if len(t) <= n], table, model).max() for n in range(budget + 1)]
    assert np.allclose(optimum.curve, best_by_size)


@settings(max_examples=40, deadline=None)
@given(st.one_of(independence_tables(), empirical_tables()), trees(max_nodes=30))
def test_no_random_tree_beats_the_optimum(table: AccuracyTable, tree: tuple) -> None:
    model = resolve_length_model(table)
    budget = max(len(tree), 1)
    assert exact_optimum(table, budget, model).expected_length >= expected_length(tree, table, model) - 1e-12


def test_curve_is_nondecreasing_and_concave() -> None:
    curve = exact_optimum(reference_table("vicuna-13b"), 128).curve
    steps = np.diff(curve)
    assert curve[0] == 1.0 and (steps >= 0).all() and (np.diff(steps) <= 1e-15).all()


def test_vllm_optimum_is_the_best_product_tree() -> None:
    table = AccuracyTable(acc=[[0.5, 0.3, 0.1], [0.4, 0.2, 0.1]])
    optimum = exact_optimum(table, 5, engine="vllm")
    level_branching(optimum.tree)  # a product tree
    products = []
    for tree in SMALL_TREES:
        try:
            level_branching(tree)
        except EngineError:
            continue
        products.append(tree)
    assert optimum.expected_length == pytest.approx(expected_lengths(products, table).max())
    assert optimum.expected_length <= exact_optimum(table, 5).expected_length


def test_trtllm_budget_is_capped() -> None:
    with pytest.raises(EngineError, match="at most max_draft_len = 63"):
        exact_optimum(reference_table("vicuna-7b"), 64, engine="trtllm")


def test_speed_optimum_maximises_tokens_per_second() -> None:
    table = reference_table("vicuna-7b")
    # The CPU profile of DESIGN.md (SmolLM2-135M, 200-token cache): a big tree is not free here.
    cpu = LatencyProfile((1, 4, 8, 16, 32, 64), (0.057, 0.092, 0.106, 0.111, 0.139, 0.182), device="cpu")
    flat = LatencyProfile((1, 128), (0.02, 0.02), device="launch-bound gpu")
    length = exact_optimum(table, 64)
    on_cpu, on_gpu = speed_optimum(table, cpu, 64), speed_optimum(table, flat, 64)
    speeds = length.curve / cpu.latencies(np.arange(65) + 1)
    assert on_cpu.value == pytest.approx(speeds.max())
    assert len(on_cpu.tree) == int(np.argmax(speeds)) < len(length.tree)
    assert len(on_gpu.tree) == 64 and on_gpu.value == pytest.approx(length.expected_length / 0.02)
    assert validate_tree(on_cpu.tree) == on_cpu.tree
