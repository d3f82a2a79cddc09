"""Explorer v2 (issue 17) through gradio_client: every state true, every message in the user's words."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from app import explore as app_explore  # noqa: E402
from app import optimise as app_optimise  # noqa: E402
from app.acceptance import HEADS_SOURCES  # noqa: E402
from app.text import END_MARK  # noqa: E402
from medusa_core import DecodeConfig, generate  # noqa: E402
from app_server import record_of, value  # noqa: E402
from optimizer import load_accuracy_table  # noqa: E402

SHIPPED_TABLE = Path(__file__).resolve().parent.parent / "heads" / "smollm2-135m-instruct" / "accuracy.json"

pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")

ROOT = Path(__file__).resolve().parent.parent
REPEATING = "Repeat this sentence twice: the red fox jumps over the lazy dog."


def plot_traces(plot: dict) -> list[dict]:
    return json.loads(plot["plot"])["data"]


def plot_layout(plot: dict) -> dict:
    return json.loads(plot["plot"])["layout"]


def run(client: Client, prompt: str, **settings) -> tuple:
    return client.predict(**(dict(prompt=prompt, max_new_tokens=6) | settings), api_name="/generate")


def upload(tmp_path: Path, name: str, content: str) -> dict:
    path = tmp_path / name
    path.write_text(content)
    return handle_file(str(path))


# ---------------------------------------------------------------- 1. Stop


def test_stop_leaves_the_stopped_runs_own_partial_record_and_other_sessions_run_on(server):
    """Three sessions at once: Stop in one leaves its own partial run; the other two finish with their
    own correct (lossless) results, on their own trees."""
    url, store = server
    stopper, *others = (Client(url, verbose=False) for _ in range(3))
    long_prompt = "Write a long essay about rivers."
    job = stopper.submit(prompt=long_prompt, max_new_tokens=400, api_name="/generate")
    other_runs = [("Count to five.", "chain-4", [(0,), (0, 0), (0, 0, 0), (0, 0, 0, 0)]),
                  ("Name two planets.", "full-2x2", [(0,), (1,), (0, 0), (0, 1), (1, 0), (1, 1)])]
    other_jobs = [c.submit(prompt=p, max_new_tokens=16, tree_choice=t, api_name="/generate")
                  for c, (p, t, _) in zip(others, other_runs)]
    deadline = time.monotonic() + 120
    while not job.outputs() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.outputs(), "the run never streamed a step"
    stopper.predict(api_name="/stop")
    outputs = job.result(timeout=300)
    html, _, caption, slider, stats, stats_plot, _, _ = outputs
    record = record_of(outputs)
    steps = record["num_steps"]
    assert record["stop_reason"] == "stopped" and record["prompt"] == long_prompt and 1 <= steps
    assert len(record["tokens"]) < 400 and html.count('class="tok ') == len(record["tokens"])
    assert f"step {steps} (Stop)" in stats and "generating" not in stats
    assert f"of {steps}**" in caption and slider["maximum"] == max(steps, 2)
    assert sum(json.loads(stats_plot["plot"])["data"][0]["y"]) == steps  # the chart is this run's
    for (prompt, _, tree), other_job in zip(other_runs, other_jobs):
        other_record = record_of(other_job.result(timeout=300))
        assert other_record["stop_reason"] != "stopped" and other_record["prompt"] == prompt
        assert other_record["tree"] == [list(p) for p in tree]
        assert other_record["tokens"] == generate(store.get(), prompt, [], DecodeConfig(max_new_tokens=16)).tokens
    next_record = record_of(run(stopper, "Say hi."))  # Stop does not stick to the session's next run
    assert next_record["stop_reason"] != "stopped"


# ---------------------------------------------------------------- 2. credit


def test_heads_get_no_credit_for_copied_tokens_and_heads_outside_the_tree_say_so(client):
    outputs = run(client, REPEATING, lookup="6", max_new_tokens=32)  # the heads' default tree, shallower than 4
    record = record_of(outputs)
    depth = max(len(p) for p in record["tree"])
    assert depth < 4
    bars = plot_traces(outputs[5])[1]
    assert bars["x"] == ["head 1", "head 2", "head 3", "head 4", "context lookup"]
    assert bars["text"][depth:4] == ["not in tree"] * (4 - depth)
    own = sum(len(s["accepted"]) > 1 and s["nodes"][s["accepted"][1]]["source"] in HEADS_SOURCES for s in record["steps"])
    assert bars["y"][0] == pytest.approx(own / record["num_steps"])
    copied = sum(any("lookup" in s["nodes"][i]["source"] for i in s["accepted"][1:]) for s in record["steps"])
    assert copied > 0 and bars["y"][4] == pytest.approx(copied / record["num_steps"])


# ---------------------------------------------------------------- 4. tree uploads


def test_a_tree_the_heads_cannot_run_is_refused_at_upload_in_plain_words(client, tmp_path):
    deep = [[0] * d for d in range(1, 6)]
    with pytest.raises(AppError, match="5 levels deep but the loaded heads are only 4"):
        client.predict(upload(tmp_path, "deep.json", json.dumps(deep)), api_name="/upload_tree")
    with pytest.raises(AppError, match="this file is not a tree") as refused:
        client.predict(upload(tmp_path, "notes.txt", "hello, this is not a tree"), api_name="/upload_tree")
    assert "literal" not in str(refused.value)
    _, info = client.predict(upload(tmp_path, "list.json", "[[0], [1]]"), api_name="/upload_tree")
    assert "JSON list of paths" in info and "2 nodes" in info


# ---------------------------------------------------------------- 5. model box


@pytest.mark.parametrize(
    "model, heads, expected",
    [
        ("/no/such/model", "random", "base model '/no/such/model' was not found: there is no such folder on this server"),
        (str(ROOT / "data"), "default", "shipped heads belong to the embedded default model"),
        ("org/no-model", "random", "no access to the Hugging Face Hub (offline)"),
        ("default", "/no/such/heads", "Medusa heads '/no/such/heads' were not found"),
        ("default", "org/no-heads", "no access to the Hugging Face Hub (offline)"),
    ],
)
def test_model_box_says_what_was_not_found_and_what_to_type(client, model, heads, expected):
    with pytest.raises(AppError) as refused:
        client.predict(model, heads, "cpu", api_name="/load_model")
    message = str(refused.value)
    assert expected in message and "In '" in message  # what to type, in the box's own terms
    for jargon in ("--heads", "Repo id", "HF_HUB_OFFLINE", "snapshot", "repo_type"):
        assert jargon not in message


def test_status_line_names_models_without_server_paths(client):
    status = client.predict("default", "default", "auto", api_name="/load_model")
    assert "(embedded)" in status and "smollm2-135m-instruct" in status
    assert str(Path.home()) not in status and str(ROOT) not in status


# ---------------------------------------------------------------- 7. sample sizes


def test_a_small_calibration_is_flagged_and_the_shipped_table_stays_selectable(client, tmp_path):
    prompts = upload(tmp_path, "prompts.txt", "Say yes.\nCount to three.\n")
    _, info, source, _, _ = client.predict("uploaded", prompts, 2, 8, 5, api_name="/calibrate")
    assert value(source) == "session" and "Small sample" in info and "95% interval" in info
    positions = f"{load_accuracy_table(SHIPPED_TABLE).samples} positions"
    _, shipped_info = client.predict("shipped", False, api_name="/accuracy_table")
    assert "shipped" in shipped_info and positions in shipped_info and "Small sample" not in shipped_info
    summary, *_ = client.predict(source="shipped", budget=4, trials=5, api_name="/optimise")
    assert "shipped" in summary and positions in summary
    summary, *_ = client.predict(source="session", budget=4, trials=5, api_name="/optimise")
    assert "calibrated or uploaded" in summary


# ---------------------------------------------------------------- 8. plain decoding, Pareto views


def test_plain_decoding_is_truly_plain(client):
    record = record_of(run(client, REPEATING, tree_choice="plain", lookup="6", max_new_tokens=16))
    assert record["tree"] == [] and record["settings"]["lookup_tokens"] == 0
    assert all(len(s["nodes"]) == 1 for s in record["steps"])
    _, info = client.predict("plain", "6", api_name="/tree_mask")
    assert "no context lookup" in info


def quick_profile(monkeypatch, client, slow_one: bool = False) -> str:
    """A fake device: steps cost 10 ms + 1 ms per token (the 1-token one 60 ms when `slow_one`)."""
    monkeypatch.setattr(app_optimise, "PROFILE_SIZES", (1, 2, 4, 8, 16, 32))

    def step_fn(medusa):
        def step(shape) -> None:
            tokens = shape.features[0]
            time.sleep(0.06 if slow_one and tokens == 1 else 0.010 + 0.001 * tokens)

        return step

    monkeypatch.setattr(app_optimise, "decoder_step_fn", step_fn)
    _, note = client.predict(api_name="/latency_profile")
    return note


def test_latency_pareto_plots_against_latency_and_any_front_tree_can_be_picked(client, monkeypatch):
    quick_profile(monkeypatch, client)
    outputs = client.predict(source="reference:vicuna-7b", budget=16, objective="length-vs-latency", trials=40, api_name="/optimise")
    summary, _, _, pareto, *_, front, status = outputs
    assert plot_layout(pareto)["xaxis"]["title"]["text"] == "predicted ms per step"
    choices = front["choices"]
    assert len(choices) >= 2 and "tokens/s predicted" in choices[0][0]
    speeds = [float(label.split("· ")[-1].split(" tokens/s")[0]) for label, _ in choices]
    assert front["value"] == choices[speeds.index(max(speeds))][1]  # the fastest predicted, not the largest
    other = next(i for _, i in choices if i != front["value"])
    picked = client.predict(other, api_name="/pick_front")
    tree_file = json.loads(Path(value(picked[7])).read_text())  # the JSON download
    assert f"{len(tree_file['paths'])} nodes" in picked[0] and picked[0] != summary


def test_the_length_objective_draws_no_one_column_pareto_plot(client):
    _, _, _, pareto, *_, front, _ = client.predict(source="reference:vicuna-7b", budget=8, objective="length", trials=10,
                                                    api_name="/optimise")
    assert not any(t.get("name") == "Pareto front" for t in plot_traces(pareto))
    assert "no trade-off" in json.dumps(plot_layout(pareto)["annotations"])
    assert front["visible"] is False


# ---------------------------------------------------------------- 9. irregular profiles


def test_an_irregular_profile_is_flagged_and_runs_show_predicted_against_measured(client, monkeypatch):
    note = quick_profile(monkeypatch, client, slow_one=True)
    assert "irregular" in note and "1 token took" in note
    stats = run(client, "Say hi.", max_new_tokens=8)[4]
    assert "Predicted" in stats and "measured" in stats and "irregular" in stats
    assert "regular" in quick_profile(monkeypatch, client) and "irregular" not in quick_profile(monkeypatch, client)


# ---------------------------------------------------------------- 10. small things


def test_seed_must_be_a_whole_number(client):
    with pytest.raises(AppError, match="whole number"):
        run(client, "Hi", seed=1.5)


def test_end_of_answer_tokens_show_as_a_mark_not_as_special_token_text(client):
    outputs = run(client, "Reply with the single word yes.", max_new_tokens=64)
    record = record_of(outputs)
    assert record["stop_reason"] == "eos"
    assert "im_end" not in outputs[0] and END_MARK in outputs[0]


def test_one_candidate_token_is_singular(client):
    caption = run(client, "Hi", tree_choice="plain", max_new_tokens=2)[2]
    assert "1 candidate token verified" in caption


# ---------------------------------------------------------------- 11. server log


def test_user_errors_log_one_line_and_faults_keep_their_traceback(client, capfd, caplog, monkeypatch):
    caplog.set_level(logging.WARNING, logger="medusa_explorer")
    with pytest.raises(AppError, match="prompt is empty"):
        run(client, "   ")
    time.sleep(0.5)
    assert "Traceback" not in capfd.readouterr().err
    lines = [r for r in caplog.records if "prompt is empty" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None and "\n" not in lines[0].getMessage()

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the explorer")

    monkeypatch.setattr(app_explore, "stream_run", broken)
    with pytest.raises(AppError, match="internal error"):
        run(client, "Hi")
    faults = [r for r in caplog.records if r.exc_info and "a bug in the explorer" in str(r.exc_info[1])]
    assert len(faults) == 1  # the traceback is kept for a real fault
