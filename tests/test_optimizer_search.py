"""Optuna search: validity of every proposed tree, cold convergence to the exact optimum, warm
start, multi-objective fronts, SQLite storage and resuming a killed study."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medusa_core.spec.trees import validate_tree
from optimizer import (
    EngineError,
    LatencyProfile,
    SearchConfig,
    SearchError,
    SearchProgress,
    TreeSpace,
    exact_optimum,
    level_branching,
    reference_table,
    run_search,
    speed_optimum,
    trials_to_reach,
)
from optimizer.space import MAX_COST
from test_optimizer_strategies import trees

REPO = Path(__file__).resolve().parent.parent
VICUNA_7B = reference_table("vicuna-7b")
CPU_PROFILE = LatencyProfile((1, 4, 8, 16, 32, 64), (0.057, 0.092, 0.106, 0.111, 0.139, 0.182), device="cpu")

optuna.logging.set_verbosity(optuna.logging.WARNING)


@st.composite
def space_params(draw: st.DrawFn, space: TreeSpace) -> dict:
    """Arbitrary values, within their ranges, for every parameter the space may ask for."""
    params = {"nodes": draw(st.integers(1, space.budget)), "pinned+1": draw(st.integers(1, space.budget + 1))}
    for d in range(space.max_depth):
        params[f"depth_cost{d}"] = draw(st.floats(0.0, MAX_COST))
        params[f"branch{d}"] = draw(st.integers(1 if d == 0 else 0, space.top_k))
        for j in range(space.top_k - 1):
            params[f"rank_gap{d}_{j}"] = draw(st.floats(0.0, MAX_COST))
    for slot in range(1, space.budget + 1):
        params[f"pin{slot}"] = draw(st.integers(0, slot * space.top_k - 1))
    return params


SPACES = [
    TreeSpace(top_k=4, max_depth=3, budget=12),
    TreeSpace(top_k=4, max_depth=3, budget=12, sized=True),
    TreeSpace(top_k=4, max_depth=3, budget=12, engine="vllm"),
    TreeSpace(top_k=10, max_depth=5, budget=63, engine="trtllm"),
]


@pytest.mark.parametrize("space", SPACES, ids=lambda s: f"{s.engine}-sized{s.sized}-b{s.budget}")
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_parameter_point_decodes_to_a_valid_tree(space: TreeSpace, data) -> None:
    params = data.draw(space_params(space))
    tree = space.suggest_tree(optuna.trial.FixedTrial(params))
    assert validate_tree(tree, space.max_depth, space.top_k) == tree
    assert 1 <= len(tree) <= space.budget
    assert len(tree) == (params["nodes"] if space.sized else space.budget) or space.engine == "vllm"
    if space.engine == "vllm":
        level_branching(tree)


@settings(max_examples=60, deadline=None)
@given(tree=trees(max_nodes=12, top_k=4, max_depth=3), data=st.data())
def test_any_tree_can_be_expressed(tree: tuple, data) -> None:
    sized = TreeSpace(top_k=4, max_depth=3, budget=12, sized=True)
    costs = data.draw(space_params(sized))
    if tree:
        assert sized.suggest_tree(optuna.trial.FixedTrial(costs | sized.params_for(tree))) == tree
    full = TreeSpace(top_k=4, max_depth=3, budget=len(tree) or 1)
    grown = full.suggest_tree(optuna.trial.FixedTrial(costs | full.params_for(tree)))
    assert set(tree) <= set(grown) and len(grown) == full.budget  # pinned, then grown to the budget


def test_every_trial_of_a_search_is_valid_and_within_budget() -> None:
    for engine in ("none", "vllm"):
        result = run_search(VICUNA_7B, SearchConfig(budget=20, engine=engine, n_trials=25, cold=True, storage=None))
        for trial in result.study.trials:
            tree = validate_tree(trial.user_attrs["paths"], VICUNA_7B.num_heads, VICUNA_7B.top_k)
            assert 1 <= len(tree) <= 20
            if engine == "vllm":
                level_branching(tree)


def test_cold_search_reaches_99_percent_of_the_exact_optimum() -> None:
    """Optuna alone (nothing enqueued, TPE seed 0) on Medusa's Vicuna-7B table, at most 300 trials.

    With Optuna 5.0 it needed 3, 4 and 4 trials for budgets 16, 32 and 64: in the ranked-cost space
    even the random start-up points are close to optimal. Run to 300 trials it stands at 99.38%,
    99.97% and 99.93% of the optimum (98.9%, 99.95%, 99.88% of the accepted tokens, E - 1).
    """
    needed = {}
    for budget in (16, 32, 64):
        target = 0.99 * exact_optimum(VICUNA_7B, budget).expected_length
        config = SearchConfig(budget=budget, n_trials=300, seed=0, cold=True, storage=None)
        result = run_search(VICUNA_7B, config, progress=lambda p: p.best_value >= target)
        needed[budget] = trials_to_reach(result.study, target)
        print(f"budget {budget}: 99% of the exact optimum after {needed[budget]} trials "
              f"({result.best.expected_length:.4f} vs {result.exact.expected_length:.4f})")
        assert needed[budget] is not None and needed[budget] <= 300
        assert len(result.study.trials) == needed[budget]  # stopped as soon as it got there


def test_warm_start_enqueues_the_exact_optimum_first() -> None:
    result = run_search(VICUNA_7B, SearchConfig(budget=63, n_trials=3, storage=None))
    first = result.study.trials[0]
    assert tuple(map(tuple, first.user_attrs["paths"])) == result.exact.tree
    assert result.best.expected_length == pytest.approx(result.exact.expected_length)
    second = result.study.trials[1]  # then Medusa's own tree
    assert len(second.user_attrs["paths"]) == 63


def test_speed_objective_and_its_exact_optimum() -> None:
    config = SearchConfig(budget=32, objective="speed", n_trials=30, storage=None)
    result = run_search(VICUNA_7B, config, profile=CPU_PROFILE)
    exact = speed_optimum(VICUNA_7B, CPU_PROFILE, 32)
    assert result.exact == exact
    assert result.best.values[0] == pytest.approx(exact.value)  # enqueued, so found
    assert len(result.best.tree) < 32  # on this CPU a big tree does not pay
    with pytest.raises(SearchError, match="needs a latency profile"):
        run_search(VICUNA_7B, config)


@pytest.mark.parametrize("objective", ["length-vs-nodes", "length-vs-latency"])
def test_multi_objective_front_is_ordered_and_valid(objective: str) -> None:
    config = SearchConfig(budget=24, objective=objective, n_trials=30, seed=1, cold=True, storage=None)
    result = run_search(VICUNA_7B, config, profile=CPU_PROFILE)
    sizes = [len(t.tree) for t in result.pareto]
    lengths = [t.expected_length for t in result.pareto]
    assert len(result.pareto) >= 2 and sizes == sorted(sizes)
    assert lengths == sorted(lengths)  # more nodes only on the front if they buy length
    assert result.best.expected_length == max(lengths)
    assert result.exact == exact_optimum(VICUNA_7B, 24)  # the first objective is the length
    for point in result.pareto:
        validate_tree(point.tree, VICUNA_7B.num_heads, VICUNA_7B.top_k)


def test_progress_reports_every_trial() -> None:
    seen: list[SearchProgress] = []
    run_search(VICUNA_7B, SearchConfig(budget=8, n_trials=5, storage=None, cold=True), progress=seen.append)
    assert [p.completed for p in seen] == [1, 2, 3, 4, 5] and all(p.total == 5 for p in seen)
    assert all(a.best_value <= b.best_value for a, b in zip(seen, seen[1:]))


def test_bad_settings_raise_clear_errors(tmp_path) -> None:
    with pytest.raises(EngineError, match="max_draft_len = 63"):
        run_search(VICUNA_7B, SearchConfig(budget=64, engine="trtllm", storage=None))
    with pytest.raises(SearchError, match="unknown objective"):
        run_search(VICUNA_7B, SearchConfig(budget=8, objective="fast", storage=None))  # type: ignore[arg-type]
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    run_search(VICUNA_7B, SearchConfig(budget=8, n_trials=2, storage=url, study_name="shared", cold=True))
    with pytest.raises(SearchError, match="exists with other settings"):
        run_search(VICUNA_7B, SearchConfig(budget=9, n_trials=2, storage=url, study_name="shared", cold=True))


def complete_trials_in(db: Path) -> int:
    try:
        with sqlite3.connect(db) as connection:
            return connection.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_killed_study_resumes_from_sqlite(tmp_path) -> None:
    db = tmp_path / "studies.db"
    url = f"sqlite:///{db}"
    command = [sys.executable, "-m", "optimizer", "search", "--accuracy", "reference:vicuna-7b", "--budget", "16",
               "--trials", "400", "--storage", url, "--study-name", "killed", "--cold", "--no-progress"]
    worker = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=os.environ | {"PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 120
        while complete_trials_in(db) < 8 and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.2)
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.wait()
    before = complete_trials_in(db)
    assert worker.returncode == -signal.SIGKILL and 8 <= before < 400
    target = before + 10
    config = SearchConfig(budget=16, n_trials=target, storage=url, study_name="killed", cold=True)
    result = run_search(VICUNA_7B, config)
    assert complete_trials_in(db) == target  # only the missing trials ran
    assert len(result.study.trials) >= target  # plus any trial the kill left running
    assert result.best.expected_length >= 0.95 * result.exact.expected_length
