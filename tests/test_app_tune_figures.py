"""The measured tuning's figures and tables (Optimise tab), from plain trial data: no model, no server."""

from __future__ import annotations

import pytest

pytest.importorskip("gradio")

from app import tune_figures, tune_tab  # noqa: E402
from app.inputs import InputError  # noqa: E402
from app.tune_figures import TrialPoint  # noqa: E402
from medusa_core import LookupConfig  # noqa: E402
from optimizer import LatencyProfile, Setup, predict_setup, reference_table  # noqa: E402

CHAIN = Setup(((0,), (0, 0)))
WIDE = Setup(((0,), (1,), (0, 0), (1, 0)), LookupConfig(8, 3, 2))
BIG = Setup(tuple((i,) for i in range(5)) + ((0, 0), (0, 1), (1, 0)))
POINTS = (
    TrialPoint(0, False, CHAIN, 10.0, 1.4),
    TrialPoint(1, False, WIDE, 12.0, 1.6),
    TrialPoint(2, True, BIG, 3.0, 1.7),  # pruned: its speed so far
    TrialPoint(3, False, BIG, 11.0, 1.8),
    TrialPoint(4, False, CHAIN, 9.0, 1.4),  # the same setup as trial 0, slower this time
)
PROFILE = LatencyProfile((1, 8, 32), (0.05, 0.06, 0.09), "cpu")


def traces(fig) -> dict:
    return {t.name: t for t in fig.data}


def test_history_marks_pruned_trials_apart_and_draws_the_best_complete_so_far():
    fig = tune_figures.history_figure(POINTS)
    shown = traces(fig)
    assert list(shown["complete trial"].x) == [0, 1, 3, 4] and list(shown["pruned trial"].x) == [2]
    assert shown["pruned trial"].marker.symbol == "x"
    assert list(shown["best so far"].y) == [10.0, 12.0, 12.0, 12.0, 12.0]  # a pruned trial never leads
    assert "measured tokens/s" in fig.layout.yaxis.title.text


def test_pareto_plot_holds_complete_trials_their_front_and_the_fastest():
    fig = tune_figures.pareto_figure(POINTS, tune_tab.fastest_point(POINTS))
    shown = traces(fig)
    assert len(shown["complete trial"].x) == 4  # the pruned trial's partial speed is left out
    assert list(zip(shown["Pareto front"].x, shown["Pareto front"].y)) == [(2, 10.0), (4, 12.0)]
    assert (shown["fastest"].x[0], shown["fastest"].y[0]) == (4, 12.0)
    assert tune_figures.speed_front(POINTS) == [(2, 10.0), (4, 12.0)]


def test_empty_figures_before_the_first_trial():
    assert tune_figures.history_figure(()).layout.annotations
    assert tune_figures.pareto_figure((), None).layout.annotations


def test_best_setups_speed_fastest_distinct_first_with_prediction_and_ratios():
    table = reference_table("vicuna-7b")
    rows = tune_tab.best_rows(POINTS, "speed", tune_tab.Predictor(table, PROFILE))
    assert [r[0] for r in rows] == [1, 3, 0]  # trial 4 repeats trial 0's setup
    assert rows[0][1:5] == [4, "8 tokens, 2-3-grams", "12.00", "1.600"]
    trial, nodes, lookup, speed, length, predicted_speed, predicted_length, speed_ratio, length_ratio = rows[1]
    guess = predict_setup(table, PROFILE, BIG.tree)
    assert predicted_speed == f"{guess.tokens_per_second:.2f}" and predicted_length == f"{guess.tokens_per_step:.3f}"
    assert speed_ratio == f"{11.0 / guess.tokens_per_second:.2f}x"
    assert length_ratio == f"{1.8 / guess.tokens_per_step:.2f}x"


def test_a_lookup_the_table_cannot_score_is_predicted_for_the_tree_alone_and_said_so():
    table = reference_table("vicuna-7b")  # no recorded positions: no lookup outcomes
    predictor = tune_tab.Predictor(table, PROFILE)
    guess = predictor(WIDE)
    try:
        full = predict_setup(table, PROFILE, WIDE.tree, WIDE.lookup)
    except ValueError:
        full = None
    if full is None:
        assert guess.tree_only and guess.reason
        assert guess.prediction == predict_setup(table, PROFILE, WIDE.tree)
        assert "Trial 1 predicted for the heads' tree alone" in tune_tab.prediction_note(POINTS, "speed", predictor)
    else:
        assert not guess.tree_only and guess.prediction == full


def test_best_setups_without_profile_or_table_say_what_is_missing():
    table = reference_table("vicuna-7b")
    no_profile = tune_tab.best_rows(POINTS, "speed", tune_tab.Predictor(table, None))
    assert no_profile[1][5] == "—" and no_profile[1][7] == "—" and no_profile[1][6] != "—"
    assert "latency profile" in tune_tab.Predictor(table, None).source()
    no_table = tune_tab.best_rows(POINTS, "speed", tune_tab.Predictor(None, PROFILE))
    assert all(r[5:] == ["—"] * 4 for r in no_table)
    assert "No accuracy table" in tune_tab.prediction_note(POINTS, "speed", tune_tab.Predictor(None, PROFILE))


def test_best_setups_pareto_is_the_front_by_nodes():
    rows = tune_tab.best_rows(POINTS, "pareto", tune_tab.Predictor(None, None))
    assert [(r[0], r[1]) for r in rows] == [(0, 2), (1, 4)]


def test_live_status_counts_finished_and_pruned_trials():
    text = tune_tab.live_status(tune_tab.Snapshot(POINTS, 5, 12))
    assert "5 of 12 trials finished (1 pruned)" in text and "12.00 tokens/s" in text


@pytest.mark.parametrize("args, message", [
    (("", 3, 8, 8, "speed"), "at least one tuning prompt"),
    (("hi", 0, 8, 8, "speed"), "trials must be between 1"),
    (("hi", 3, 0, 8, "speed"), "node budget must be between 1"),
    (("hi", 3, 8, 0, "speed"), "max new tokens must be between 1"),
    (("hi", 2.5, 8, 8, "speed"), "trials must be a whole number"),
    (("hi", 3, 8, 8, "length"), "unknown objective"),
])
def test_bad_settings_are_refused_in_the_pages_words(args, message):
    with pytest.raises(InputError, match=message):
        tune_tab.tune_settings(*args)


def test_settings_and_example_prompts():
    settings = tune_tab.tune_settings(" a \n\n b\n", 3.0, 64, 32, "pareto")
    assert settings == tune_tab.TuneSettings(("a", "b"), 3, 64, 32, "pareto")
    examples = tune_tab.example_prompts().splitlines()
    calibration = tune_tab.CALIBRATION_FILE.read_text().splitlines()
    assert 1 <= len(examples) <= 4 and all(e in calibration for e in examples)
