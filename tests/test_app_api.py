"""Every public endpoint of the explorer through gradio_client, on the default model (in-process server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from app import ModelStore  # noqa: E402
from app import optimise as app_optimise  # noqa: E402
from medusa_core import DecodeConfig, generate  # noqa: E402
from optimizer import FORMATS, import_tree  # noqa: E402
from app_server import record_of, value  # noqa: E402

# gradio's own Dataframe code trips pandas 3 deprecation warnings; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")

PUBLIC_ENDPOINTS = {
    "/load_model", "/generate", "/show_step", "/tree_mask", "/upload_tree", "/accuracy_table", "/calibrate",
    "/upload_accuracy", "/optimise", "/latency_profile", "/optimise_upload_accuracy", "/use_in_explore", "/stop", "/pick_front",
    "/run_batch", "/batch_step", "/measure_batches", "/comparison", "/open_record", "/tune", "/stop_tune",
}
TOKENS = 6


def plain_tokens(store: ModelStore, prompt: str, tokens: int = TOKENS) -> list[int]:
    return generate(store.get(), prompt, [], DecodeConfig(max_new_tokens=tokens)).tokens


def run(client: Client, prompt: str, **settings) -> tuple:
    args = dict(prompt=prompt, max_new_tokens=TOKENS, tree_choice="full-2x2") | settings
    return client.predict(**args, api_name="/generate")


def plot_traces(plot: dict) -> list[dict]:
    assert plot["type"] == "plotly"
    return json.loads(plot["plot"])["data"]


def upload(tmp_path: Path, name: str, content: str) -> dict:
    path = tmp_path / name
    path.write_text(content)
    return handle_file(str(path))


def test_every_public_endpoint_is_listed(client):
    assert set(client.view_api(return_format="dict", print_info=False)["named_endpoints"]) == PUBLIC_ENDPOINTS


def test_generate_streams_a_lossless_run_with_tree_stats_and_record(server, client):
    url, store = server
    prompt = "Name three colours."
    outputs = run(client, prompt, compare=True)
    html, tree_plot, caption, slider, stats, stats_plot, comparison, _ = outputs
    record = record_of(outputs)
    assert record["format"] == "medusa-generation/1" and record["prompt"] == prompt
    assert record["tokens"] == plain_tokens(store, prompt)
    assert html.count('class="tok ') == len(record["tokens"])
    names = [t.get("name") for t in plot_traces(tree_plot)]
    assert "accepted path" in names and "root (base model)" in names
    assert f"of {record['num_steps']}**" in caption
    assert slider["maximum"] == max(record["num_steps"], 2) and slider["interactive"] == (record["num_steps"] > 1)
    assert "tokens / step" in stats and len(plot_traces(stats_plot)) == 2
    assert "Speed-up" in comparison and "outputs identical" in comparison


def test_two_clients_generating_at_once_each_get_their_own_result(server):
    url, store = server
    prompts = ["What is the capital of France?", "Write a haiku about the sea."]
    clients = [Client(url, verbose=False) for _ in prompts]
    jobs = [c.submit(prompt=p, max_new_tokens=TOKENS, tree_choice="chain-4", api_name="/generate") for c, p in zip(clients, prompts)]
    for prompt, job in zip(prompts, jobs):
        record = record_of(job.result(timeout=300))
        assert record["prompt"] == prompt
        assert record["tokens"] == plain_tokens(store, prompt)


def test_show_step_scrubs_the_sessions_last_run(client):
    outputs = run(client, "Say hello.")
    steps = record_of(outputs)["num_steps"]
    plot, caption = client.predict(1, "probability", api_name="/show_step")
    assert caption.startswith(f"**Step 1 of {steps}**")
    assert any(t.get("name") == "nodes" for t in plot_traces(plot))


def test_show_step_before_any_run_is_a_clear_error(client):
    with pytest.raises(AppError, match="Run a prompt first"):
        client.predict(1, "depth", api_name="/show_step")


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(prompt="   "), "prompt is empty"),
        (dict(prompt="x" * 9000), "limit is 8000"),
        (dict(tree_choice="optimised"), "no optimised tree yet"),
        (dict(tree_choice="uploaded"), "no tree file uploaded"),
        (dict(mode="typical", temperature=0), "less than minimum value"),
    ],
)
def test_bad_generate_input_is_a_clear_error(client, settings, message):
    with pytest.raises(AppError, match=message):
        run(client, **({"prompt": "Hi"} | settings))


def test_uploaded_tree_is_validated_then_used(client, tmp_path):
    with pytest.raises(AppError, match="no parent"):
        client.predict(upload(tmp_path, "bad.json", json.dumps({"format": "medusa-tree/1", "paths": [[0, 0]]})), api_name="/upload_tree")
    with pytest.raises(AppError, match="not valid JSON"):
        client.predict(upload(tmp_path, "broken.json", "{"), api_name="/upload_tree")
    choice, info = client.predict(upload(tmp_path, "tree.json", json.dumps([[0], [1], [0, 0]])), api_name="/upload_tree")
    assert value(choice) == "uploaded" and "3 nodes" in info
    record = record_of(run(client, "Hi", tree_choice="uploaded"))
    assert record["tree"] == [[0], [1], [0, 0]]
    choice, info = client.predict(upload(tmp_path, "trtllm.txt", '--medusa_choices="[[0], [0, 0]]"'), api_name="/upload_tree")
    assert "TensorRT-LLM" in info and "2 nodes" in info


def test_tree_mask_of_a_preset(client):
    plot, info = client.predict("full-2x2", "0", api_name="/tree_mask")
    heatmap = plot_traces(plot)[0]
    assert heatmap["type"] == "heatmap" and len(heatmap["x"]) == 7
    assert "**6** candidate nodes" in info and "lookup" not in info


def test_tree_mask_with_a_lookup_chain(client):
    plot, info = client.predict("full-2x2", "4", api_name="/tree_mask")
    heatmap = plot_traces(plot)[0]
    assert heatmap["x"][-4:] == ["copy 1", "copy 2", "copy 3", "copy 4"]
    assert "up to **4** copied tokens (11 at most)" in info
    seen = [[" sees " in cell for cell in row] for row in heatmap["hovertext"][-4:]]  # the chain's rows
    assert [sum(row[1:7]) for row in seen] == [0, 0, 0, 0]  # the chain does not see the heads' nodes
    assert [sum(row[7:]) for row in seen] == [1, 2, 3, 4]  # each copy sees itself and the copies before it


def test_unknown_model_is_an_error_and_the_app_keeps_serving(client):
    with pytest.raises(AppError, match="cannot load"):
        client.predict("/no/such/model", "random", "cpu", api_name="/load_model")
    assert record_of(run(client, "Hi"))["tokens"]


def test_loading_other_heads_changes_only_this_session(server, client):
    status = client.predict("default", "random", "auto", api_name="/load_model")
    assert "untrained (random)" in status and ("device **cpu**" in status or "device **cuda" in status)
    assert record_of(run(client, "Hi"))["heads"] == "random"
    other = Client(server[0], verbose=False)
    assert record_of(run(other, "Hi"))["heads"] == server[1].get().heads_name


def test_reference_accuracy_table(client):
    plot, info = client.predict("reference:vicuna-7b", True, api_name="/accuracy_table")
    assert plot_traces(plot)[0]["type"] == "heatmap" and "top-1 per head: 0.56" in info


def test_accuracy_upload_validation(client, tmp_path):
    bad = {"format": "medusa-accuracy/1", "top_k": 2, "acc": [[0.9, 0.5]]}
    with pytest.raises(AppError, match="sums to"):
        client.predict(upload(tmp_path, "acc.json", json.dumps(bad)), False, api_name="/upload_accuracy")
    good = {"format": "medusa-accuracy/1", "top_k": 2, "acc": [[0.6, 0.2], [0.4, 0.1]]}
    plot, info, source, note = client.predict(upload(tmp_path, "acc.json", json.dumps(good)), False, api_name="/upload_accuracy")
    assert value(source) == "session" and "2 heads" in info


def test_calibrate_on_an_uploaded_prompt_file(client, tmp_path):
    prompts = upload(tmp_path, "prompts.txt", "Say yes.\n\nCount to three.\n")
    plot, info, source, table_file, note = client.predict("uploaded", prompts, 2, 8, 5, api_name="/calibrate")
    table = json.loads(Path(value(table_file)).read_text())
    assert table["format"] == "medusa-accuracy/1" and table["top_k"] == 5 and table["samples"] > 0
    assert value(source) == "session" and "calibrated on 2 prompts" in info


def test_optimise_exports_and_use_in_explore(client):
    summary, best, history, pareto, curve, comparison, export_note, *downloads, front, status = client.predict(
        source="reference:vicuna-7b", budget=8, objective="length-vs-nodes", trials=20, api_name="/optimise"
    )
    assert "Tree on the Pareto front" in summary and "exact optimum" in summary
    assert {row[0] for row in comparison["data"]} >= {"best found", "exact optimum", "mc_sim_7b_63"}
    assert any(t.get("name") == "Pareto front" for t in plot_traces(pareto))
    assert any(t.get("name") == "exact optimum E(N)" for t in plot_traces(curve))
    files = {fmt: value(button) for fmt, button in zip(FORMATS, downloads)}
    tree_file = json.loads(Path(files["json"]).read_text())
    assert tree_file["format"] == "medusa-tree/1" and 1 <= len(tree_file["paths"]) <= 8
    tree = import_tree(Path(files["json"]).read_text(), "json")
    for fmt in ("medusa", "trtllm"):
        assert import_tree(Path(files[fmt]).read_text(), fmt) == tree
    assert "--speculative-num-draft-tokens" in Path(files["sglang"]).read_text()
    if files["vllm"] is None:  # not a product tree: the note says why
        assert "vLLM" in export_note and "not possible" in export_note
    choice, note = client.predict(api_name="/use_in_explore")
    assert value(choice) == "optimised" and "in use" in note
    record = record_of(run(client, "Hi", tree_choice="optimised"))
    assert len(record["tree"]) <= 8


def test_speed_objective_needs_and_uses_a_latency_profile(client, monkeypatch):
    monkeypatch.setattr(app_optimise, "PROFILE_SIZES", (1, 8, 32))  # a quick profile; the server runs in this process
    with pytest.raises(AppError, match="latency profile"):
        client.predict(source="reference:vicuna-7b", budget=8, objective="speed", trials=5, api_name="/optimise")
    plot, note = client.predict(api_name="/latency_profile")
    assert "per pass" in note
    summary, *_ = client.predict(source="reference:vicuna-7b", budget=8, objective="speed", trials=5, api_name="/optimise")
    assert "tokens per second" in summary


def test_typical_acceptance_is_reproducible_for_a_seed(client):
    first, second = (record_of(run(client, "Tell me a story.", mode="typical", seed=7)) for _ in range(2))
    assert first["settings"]["mode"] == "typical" and first["tokens"] == second["tokens"]


def test_uploads_over_the_size_limit_are_refused(client, tmp_path):
    big = upload(tmp_path, "big.json", "[" + " " * (6 * 1024 * 1024) + "]")
    with pytest.raises(Exception, match="(?i)size|large|limit"):
        client.predict(big, api_name="/upload_tree")
    assert record_of(run(client, "Hi"))["tokens"]


def test_vllm_constraint_gives_a_tree_vllm_can_take(client):
    *_, export_note, json_file, medusa, trtllm, vllm, sglang, front, status = client.predict(
        source="reference:vicuna-7b", budget=10, engine="vllm", trials=10, api_name="/optimise"
    )
    assert export_note == ""
    tree = import_tree(Path(value(json_file)).read_text(), "json")
    assert import_tree(Path(value(vllm)).read_text(), "vllm") == tree


def test_context_lookup_choice_is_lossless_and_drawn_in_red(server, client):
    url, store = server
    prompt = "Repeat this sentence twice: the red fox jumps over the lazy dog."
    outputs = run(client, prompt, tree_choice="chain-0", lookup="6", max_new_tokens=24)
    record = record_of(outputs)
    assert record["tokens"] == plain_tokens(store, prompt, 24)
    assert record["settings"]["lookup_tokens"] == 6
    sources = [[n["source"] for n in s["nodes"]] for s in record["steps"]]
    assert all(s[0] == "root" and set(s[1:]) <= {"lookup"} and len(s) <= 7 for s in sources)
    assert any(len(s) > 1 for s in sources), "no step found anything to copy in a prompt made of repeated words"
    last_plot = plot_traces(outputs[1])
    assert ("context lookup" in [t.get("name") for t in last_plot]) == (len(sources[-1]) > 1)
    assert "+ 6 lookup" in outputs[4]
    off = record_of(run(client, prompt, tree_choice="chain-0", lookup="0"))
    assert off["settings"]["lookup_tokens"] == 0 and all(len(s["nodes"]) == 1 for s in off["steps"])


def test_exact_sampling_shows_the_draws_and_acceptance_per_depth(client):
    first, second = (run(client, "Tell me a story.", mode="exact", temperature=0.8, top_p=0.9, seed=3) for _ in range(2))
    record = record_of(first)
    assert record["settings"]["mode"] == "exact" and record["settings"]["top_p"] == 0.9
    assert record["tokens"] == record_of(second)["tokens"]  # seeded
    assert all(len(s["drawn"]) == len(s["accepted"]) for s in record["steps"])
    caption, stats = value(first[2]), value(first[4])
    assert "Drawn from the model" in caption and ("✓ a child" in caption or "no child" in caption)
    assert "exact sampling" in stats and ("accepted past depth" in stats or "no drafted token" in stats)
