"""``python -m optimizer``: one end-to-end subprocess run per command (started together, since
each pays the start-up import of medusa_core), plus in-process checks of user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medusa_core.spec.lookup import LookupConfig
from medusa_core.spec.trees import load_tree_file, load_tree_with_lookup, save_tree_file
from optimizer import LatencyProfile, accuracy_from_ranks, load_latency_profile, save_accuracy_table, save_latency_profile
from optimizer.__main__ import main
from optimizer.accuracy import LookupOutcomes, load_accuracy_table
from optimizer.expected_length import TreeScorer
from optimizer.walk import walk

REPO = Path(__file__).resolve().parent.parent

FAKE_FACTORY = '''
import time

def make_tree_forward(model_spec, device, dtype, prefix_len=200, batch_size=1):
    def forward(tokens):
        sum(range(1000 * tokens * batch_size))
    return forward, {"model": model_spec or "default", "device": device, "dtype": dtype,
                     "prefix_len": prefix_len, "threads": 1, "batch_size": batch_size}


def make_decoder_step(model_spec, device, dtype, prefix_len=200, batch_size=1):
    def step(shape):
        tokens, depth, internal = shape.features
        time.sleep(0.001 * (tokens + 4 * depth + 2 * internal + (3 if shape.chain else 0)))  # robust to load
    return step, {"model": "fake", "device": device, "dtype": dtype, "prefix_len": prefix_len, "num_heads": 3,
                  "top_k": 4, "batch_size": batch_size}
'''


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Start every command at once; each test waits for its own."""
    work = tmp_path_factory.mktemp("cli")
    ranks = [[0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 0], [2, -1, 0], [0, 0, 3]] * 20
    save_accuracy_table(accuracy_from_ranks(ranks, top_k=4, model="tiny", heads="tiny-heads"), work / "acc.json")
    save_latency_profile(LatencyProfile((1, 4, 16, 64), (0.05, 0.08, 0.11, 0.2), device="cpu"), work / "p.json")
    # a busy batch of 16: every verified token costs, so the speed optimum shrinks
    save_latency_profile(LatencyProfile((1, 4, 16, 64), (0.05, 0.06, 0.2, 0.8), batch_size=16), work / "p16.json")
    save_tree_file(work / "tree.json", [[0], [1], [0, 0], [0, 1], [1, 0], [1, 1]], num_heads=3, top_k=4)
    (work / "fakeforward.py").write_text(FAKE_FACTORY)
    lookups = (LookupOutcomes(2, 3, 8, [2, 0, 4, 0, 1, 0] * 20, [1, 0, 3, 0, 0, 0] * 20),)
    save_accuracy_table(accuracy_from_ranks(ranks, top_k=4, segments=(60, 60), lookups=lookups), work / "acc-lk.json")
    commands = {
        "search": ["search", "--accuracy", "reference:vicuna-7b", "--budget", "16", "--trials", "12",
                   "--engine", "trtllm", "--storage", f"sqlite:///{work / 'studies.db'}", "--out", "best.json",
                   "--lookup-tokens", "5", "--lookup-ngram", "1", "2"],
        "exact": ["exact", "--accuracy", "acc.json", "--budget", "20", "--objective", "speed", "--profile", "p.json",
                  "--curve", "--out", "exact.txt", "--format", "medusa"],
        "compare": ["compare"],
        "export": ["export", "--tree", "tree.json", "--format", "vllm"],
        "profile": ["profile", "--forward-factory", "fakeforward:make_tree_forward", "--device", "cpu",
                    "--sizes", "1,2,4", "--repeats", "2", "--warmup", "1", "--out", "measured.json"],
        "profile_batches": ["profile", "--forward-factory", "fakeforward:make_tree_forward", "--sizes", "1,8",
                            "--repeats", "2", "--batch-sizes", "1,4", "--out", "batched.json", "--no-progress"],
        "profile_steps": ["profile", "--step-factory", "fakeforward:make_decoder_step", "--sizes", "1,2,4,8,16",
                          "--repeats", "3", "--warmup", "0", "--out", "steps.json", "--no-progress"],
        "exact_lookup": ["exact", "--accuracy", "acc-lk.json", "--budget", "8", "--length-model", "empirical",
                         "--lookup-tokens", "4", "--out", "with-lookup.json"],
        "exact_walk": ["exact", "--accuracy", "acc-lk.json", "--budget", "6", "--length-model", "walk",
                       "--objective", "speed", "--profile", "p.json", "--lookup-tokens", "4", "--out", "walked.json"],
        "predict": ["predict", "--accuracy", "acc-lk.json", "--tree", "tree.json", "--profile", "p.json",
                    "--lookup-tokens", "4"],
        "exact_batches": ["exact", "--accuracy", "acc.json", "--budget", "20", "--objective", "speed",
                          "--profile", "p.json", "p16.json", "--out", "per-batch.json"],
    }
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO), str(work)])}
    started = {
        name: subprocess.Popen([sys.executable, "-m", "optimizer", *argv], cwd=work, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name, argv in commands.items()
    }
    return {"work": work, "started": started}


def finished(runs: dict, name: str) -> str:
    process = runs["started"][name]
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    return stdout


def test_search_command_writes_a_tree_with_its_objective(runs: dict) -> None:
    stdout = finished(runs, "search")
    assert "best tree: 16 nodes" in stdout and "of the exact optimum" in stdout
    data = json.loads((runs["work"] / "best.json").read_text())
    meta = data["meta"]
    assert meta["objective"] == "length" and meta["engine"] == "trtllm" and meta["trials"] == 12
    assert meta["objective_value"] == pytest.approx(meta["expected_length"])
    assert meta["objective_value"] == pytest.approx(meta["exact_optimum_value"])  # warm start: enqueued
    assert len(load_tree_file(runs["work"] / "best.json")) == 16
    assert load_tree_with_lookup(runs["work"] / "best.json")[1] == LookupConfig(5, max_ngram=2, min_ngram=1)
    assert (runs["work"] / "studies.db").exists()


def test_exact_command_prints_the_curve_and_exports(runs: dict) -> None:
    stdout = finished(runs, "exact")
    assert "exact optimum (speed, empirical model" in stdout
    assert stdout.count("\n") >= 22  # header + 21 curve rows
    text = (runs["work"] / "exact.txt").read_text()
    assert text.startswith("[[0]")


def test_profile_per_batch_size_writes_one_file_each(runs: dict) -> None:
    stdout = finished(runs, "profile_batches")
    one, four = (load_latency_profile(runs["work"] / f"batched-b{b}.json") for b in (1, 4))
    assert (one.batch_size, four.batch_size) == (1, 4) and "batch 4:" in stdout
    assert four.latency(8) > one.latency(8)  # the fake forward's work grows with the rows


def test_exact_speed_per_batch_size_recommends_smaller_trees_for_busy_batches(runs: dict) -> None:
    stdout = finished(runs, "exact_batches")
    assert "batch 16" in stdout
    trees = {b: json.loads((runs["work"] / f"per-batch-b{b}.json").read_text()) for b in (1, 16)}
    assert [trees[b]["meta"]["batch_size"] for b in (1, 16)] == [1, 16]
    assert 0 < len(trees[16]["paths"]) < len(trees[1]["paths"])


def test_compare_command_prints_both_figures(runs: dict) -> None:
    stdout = finished(runs, "compare")
    assert "mc_sim_7b_63" in stdout
    rows = [line.split() for line in stdout.splitlines() if line.startswith("reference:vicuna-7b")]
    assert len(rows) == 2
    for row in rows:
        optimum, medusa = float(row[-3]), float(row[-2])
        assert optimum >= medusa
    assert rows[0][-3:-1] == ["2.3845", "2.3400"]


def test_export_command_prints_the_engine_string(runs: dict) -> None:
    assert finished(runs, "export").strip() == "[(0,), (1,), (0, 0), (0, 1), (1, 0), (1, 1)]"


def test_profile_command_saves_a_profile(runs: dict) -> None:
    stdout = finished(runs, "profile")
    profile = load_latency_profile(runs["work"] / "measured.json")
    assert profile.sizes == (1, 2, 4) and profile.device == "cpu" and profile.model == "default"
    assert profile.meta["threads"] == 1 and "4 tokens" in stdout


def test_profile_times_the_decoder_step_and_fits_its_cost_model(runs: dict) -> None:
    stdout = finished(runs, "profile_steps")
    profile = load_latency_profile(runs["work"] / "steps.json")
    assert profile.has_step_model and profile.model == "fake" and "per head computed" in stdout
    assert profile.depth_seconds == pytest.approx(0.004, rel=0.5)  # sleeps overshoot under load: loose bounds
    assert profile.internal_seconds == pytest.approx(0.002, rel=0.6)


def test_exact_with_a_lookup_scores_both_and_records_the_lookup(runs: dict) -> None:
    stdout = finished(runs, "exact_lookup")
    data = json.loads((runs["work"] / "with-lookup.json").read_text())
    assert data["lookup"] == {"tokens": 4, "max_ngram": 3, "min_ngram": 2}
    table = load_accuracy_table(runs["work"] / "acc-lk.json")
    scored = TreeScorer(table, "empirical", LookupConfig(4, 3, 2)).expected_length(data["paths"])
    assert f"{scored:.4f} tokens/step" in stdout


def test_exact_on_the_walk_writes_the_walk_figure(runs: dict) -> None:
    stdout = finished(runs, "exact_walk")
    data = json.loads((runs["work"] / "walked.json").read_text())
    assert "walk-consistent optimum (speed, walk model" in stdout and data["meta"]["length_model"] == "walk"
    table = load_accuracy_table(runs["work"] / "acc-lk.json")
    assert data["meta"]["expected_length"] == pytest.approx(walk(table, data["paths"], LookupConfig(4, 3, 2)).tokens_per_step)


def test_predict_walks_the_table_and_prices_the_step(runs: dict) -> None:
    stdout = finished(runs, "predict")
    assert "6 nodes, lookup 4 tokens, 2-3-grams:" in stdout and "(walk)" in stdout and "tokens/s" in stdout


def test_user_errors_exit_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "medusa-accuracy/1", "top_k": 2, "acc": [[0.5, float("nan")]]}))
    assert main(["search", "--accuracy", str(bad), "--storage", f"sqlite:///{tmp_path / 's.db'}"]) == 2
    assert "error: acc[0][1] is NaN" in capsys.readouterr().err
    assert main(["exact", "--accuracy", "reference:vicuna-7b", "--objective", "speed"]) == 2
    assert "needs --profile" in capsys.readouterr().err
    assert main(["export", "--tree", "mc_sim_7b_63", "--format", "vllm"]) == 2
    assert "vLLM needs" in capsys.readouterr().err
    assert main(["search", "--accuracy", "reference:vicuna-7b", "--engine", "trtllm", "--budget", "64"]) == 2
    assert "max_draft_len = 63" in capsys.readouterr().err
    assert main(["search", "--accuracy", "reference:vicuna-7b", "--lookup-tokens", "4", "--lookup-ngram", "3", "1"]) == 2
    assert "min_ngram <= max_ngram" in capsys.readouterr().err
    assert main(["search", "--accuracy", "reference:vicuna-7b", "--lookup-tokens", "4", "--format", "vllm", "--budget", "4",
                 "--trials", "2", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--out", str(tmp_path / "t.txt")]) == 2
    assert "only the json format records a context lookup" in capsys.readouterr().err


def test_importing_the_optimizer_never_imports_torch():
    code = "import optimizer, optimizer.__main__, sys; assert 'torch' not in sys.modules, 'torch imported'"
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr
