"""The Optimise tab's measured tuning through gradio_client: trials on the loaded default model, measured
against predicted speed, the tuned tree file, Stop, and bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("gradio")
from gradio_client.exceptions import AppError  # noqa: E402

from app import optimise as app_optimise  # noqa: E402
from app_server import value  # noqa: E402
from medusa_core.spec.trees import load_tree_with_lookup  # noqa: E402

# gradio's own Dataframe code trips pandas 3 deprecation warnings; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")

PROMPTS = "Name three colours.\nWhat is the capital of France?"
COLUMNS = ["trial", "tree nodes", "lookup", "measured tokens/s", "measured tokens/step", "predicted tokens/s",
           "predicted tokens/step", "measured / predicted tokens/s", "measured / predicted tokens/step"]


@pytest.fixture(autouse=True)
def one_thread(server, monkeypatch):
    """The suite shares a 2-core machine with other jobs: tune on one torch thread (two oversubscribe it)."""
    monkeypatch.setattr(server[1].threads, "cores", 1)


def tune(client, **settings) -> tuple:
    args = dict(prompts=PROMPTS, trials=3, budget=8, max_new_tokens=8, objective="speed") | settings
    return client.predict(**args, api_name="/tune")


def rows(best: dict) -> list[dict]:
    assert best["headers"] == COLUMNS
    return [dict(zip(COLUMNS, row)) for row in best["data"]]


def plot_traces(plot: dict) -> dict:
    return {t["name"]: t for t in json.loads(plot["plot"])["data"]}


def tree_file(download) -> tuple[tuple, object, dict]:
    path = Path(value(download))
    tree, lookup = load_tree_with_lookup(path)
    return tree, lookup, json.loads(path.read_text())["meta"]


def test_tuning_measures_trials_and_sets_predicted_beside_measured(client, monkeypatch):
    monkeypatch.setattr(app_optimise, "PROFILE_SIZES", (1, 8, 32))  # a quick profile; the server runs in this process
    client.predict(api_name="/latency_profile")
    status, history, pareto, best, note, download = tune(client)
    shown = plot_traces(history)
    trials = list(shown["complete trial"]["x"]) + list(shown["pruned trial"]["x"])
    assert sorted(trials) == [0, 1, 2] and "best so far" in shown
    assert "Pareto front" in plot_traces(pareto)
    table = rows(best)
    assert table
    for row in table:
        assert float(row["measured tokens/s"]) > 0 and float(row["measured tokens/step"]) >= 1.0
        assert float(row["predicted tokens/step"]) >= 1.0 and float(row["predicted tokens/s"]) > 0
        assert row["measured / predicted tokens/s"].endswith("x")
        assert row["measured / predicted tokens/step"].endswith("x")
    assert "**Done**: 3 finished trials" in note and "Fastest: trial" in note
    tree, lookup, meta = tree_file(download)
    assert meta["source"] == "optimizer tune" and meta["trials"] == 3 and meta["prompts_count"] == 2
    assert meta["max_new_tokens"] == 8 and meta["budget"] == 8 and 1 <= len(tree) <= 8
    assert meta["trial"] == table[0]["trial"] and meta["measured_tokens_per_second"] == pytest.approx(
        float(table[0]["measured tokens/s"]), abs=0.01)
    assert (lookup is None) == (table[0]["lookup"] == "off")


def test_pareto_tuning_without_a_profile_predicts_tokens_per_step_only(client):
    _, _, _, best, note, download = tune(client, objective="pareto", trials=2)
    table = rows(best)
    assert table and all(r["predicted tokens/s"] == "—" and r["predicted tokens/step"] != "—" for r in table)
    assert [r["tree nodes"] for r in table] == sorted(r["tree nodes"] for r in table)
    assert "needs the latency profile" in note
    _, _, meta = tree_file(download)
    assert meta["objective"] == "pareto" and meta["pareto_front"]


def test_stop_ends_the_run_and_keeps_its_finished_trials(client):
    job = client.submit(prompts=PROMPTS, trials=200, budget=8, max_new_tokens=8, objective="speed", api_name="/tune")
    deadline = time.time() + 120
    while len(job.outputs()) < 2 and time.time() < deadline:  # the warm-up's output, then the first trial's
        time.sleep(0.2)
    client.predict(api_name="/stop_tune")
    status, history, pareto, best, note, download = job.result(timeout=120)
    assert "**Stopped**" in note and rows(best)
    _, _, meta = tree_file(download)
    assert 1 <= meta["trials"] < 200


def test_two_sessions_tuning_at_once_each_get_their_own_study(server):
    from gradio_client import Client

    clients = [Client(server[0], verbose=False) for _ in range(2)]
    jobs = [c.submit(prompts=PROMPTS, trials=2, budget=8, max_new_tokens=4, objective="speed", api_name="/tune")
            for c in clients]
    speeds = []
    for job in jobs:
        _, history, _, _, note, download = job.result(timeout=300)
        assert "**Done**: 2 finished trials" in note and tree_file(download)[2]["trials"] == 2
        shown = plot_traces(history)
        speeds.append(sorted(shown["complete trial"]["y"] + shown["pruned trial"]["y"]))
    assert speeds[0] != speeds[1]  # each session measured its own two trials (one study would show the same)


@pytest.mark.parametrize("settings, message", [
    (dict(prompts="  \n"), "at least one tuning prompt"),
    (dict(budget=0), "node budget must be between 1"),
    (dict(trials=0), "trials must be between 1"),
])
def test_bad_tuning_input_is_a_clear_error_and_the_app_keeps_serving(client, settings, message):
    with pytest.raises(AppError, match=message):
        tune(client, **settings)
    *_, note, download = tune(client, trials=1, max_new_tokens=4)
    assert "1 finished trials" in note and value(download)
