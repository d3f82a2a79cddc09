"""optimizer search where optimizer.exact solves the objective: the exact optimum is the answer and
Optuna a checked, cold cross-check (issue 16, part 5)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from medusa_core.spec.trees import load_tree_file
from optimizer import LatencyProfile, SearchConfig, exact_optimum, reference_table, run_search, save_latency_profile
from optimizer.__main__ import main
from optimizer.search import ExactnessError, cross_check

VICUNA_7B = reference_table("vicuna-7b")


def test_the_cross_check_measures_optuna_against_the_exact_optimum_and_refuses_a_better_tree():
    result = run_search(VICUNA_7B, SearchConfig(budget=12, n_trials=15, seed=0, cold=True, storage=None))
    check = cross_check(result)
    assert check.trials == 15 and check.exact_value == pytest.approx(exact_optimum(VICUNA_7B, 12).expected_length)
    assert 0.9 < check.ratio <= 1.0 and check.best_value == result.best.values[0]
    assert check.trials_to_99_percent is None or 1 <= check.trials_to_99_percent <= 15
    impossible = dataclasses.replace(result.best, values=(check.exact_value * 1.01,))
    with pytest.raises(ExactnessError, match="above the exact optimum"):
        cross_check(dataclasses.replace(result, best=impossible))


def test_a_pareto_point_above_the_exact_curve_at_its_size_is_refused():
    config = SearchConfig(budget=8, objective="length-vs-nodes", n_trials=10, seed=0, cold=True, storage=None)
    result = run_search(VICUNA_7B, config)
    cross_check(result)
    small = min(result.pareto, key=lambda p: len(p.tree))
    lifted = dataclasses.replace(small, values=(result.exact.curve[len(small.tree)] + 1e-3, float(len(small.tree))))
    with pytest.raises(ExactnessError):
        cross_check(dataclasses.replace(result, pareto=(lifted,)))


def test_search_writes_the_exact_answer_and_records_the_cold_cross_check(tmp_path, capsys):
    out = tmp_path / "tree.json"
    argv = ["search", "--accuracy", "reference:vicuna-7b", "--budget", "10", "--trials", "4", "--no-progress",
            "--storage", f"sqlite:///{tmp_path}/s.db", "--out", str(out)]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "answer: the exact optimum, 10 nodes" in stdout and "Optuna cross-check (cold, 4 trials" in stdout
    meta = json.loads(out.read_text())["meta"]
    exact = exact_optimum(VICUNA_7B, 10)
    assert load_tree_file(out) == exact.tree
    assert meta["answer"] == "exact optimum" and meta["objective_value"] == pytest.approx(exact.expected_length)
    assert meta["cross_check"]["trials"] == 4 and meta["cross_check"]["ratio"] <= 1.0


def test_length_vs_latency_has_no_exact_answer_so_the_search_is_the_answer(tmp_path, capsys):
    profile = tmp_path / "p.json"
    save_latency_profile(LatencyProfile((1, 4, 16, 64), (0.05, 0.08, 0.11, 0.2)), profile)
    out = tmp_path / "tree.json"
    argv = ["search", "--accuracy", "reference:vicuna-7b", "--budget", "10", "--trials", "3", "--no-progress",
            "--objective", "length-vs-latency", "--profile", str(profile), "--storage", f"sqlite:///{tmp_path}/s.db",
            "--out", str(out)]
    assert main(argv) == 0
    assert "Optuna cross-check" not in capsys.readouterr().out
    meta = json.loads(out.read_text())["meta"]
    assert meta["answer"] == "Optuna search" and "cross_check" not in meta
