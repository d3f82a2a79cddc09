"""End-to-end: each `python -m medusa_core` command in a subprocess, on the default model."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medusa_core.modeling.heads_io import save_heads
from tiny_models import random_heads

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "medusa_core", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def test_generate_prints_text_and_speed():
    out = cli("generate", "--prompt", "Name three colours.", "--max-new-tokens", "12", "--tree", "full-2x2")
    assert out.returncode == 0, out.stderr
    assert "tokens/step" in out.stdout and "tokens/s" in out.stdout


def test_generate_json_and_prompts_file(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("What is 2+2?\n\nSay hello.\n")
    out = cli("generate", "--prompts", str(prompts), "--max-new-tokens", "8", "--tree", "chain-2", "--lookup-tokens", "4")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["prompt"] for r in records] == ["What is 2+2?", "Say hello."]
    for r in records:
        assert r["format"] == "medusa-generation/1"
        assert (r["settings"]["lookup_tokens"], r["settings"]["lookup_min_ngram"]) == (4, 2)
        assert all(len(s["nodes"]) <= 3 + 4 for s in r["steps"])
        assert 1 <= len(r["tokens"]) <= 8
        assert r["tree"] == [[0], [0, 0]]
        assert r["prompt_tokens"][:1] != []  # chat template applied: starts with <|im_start|>
        assert "<|im_start|>" not in r["text"]


def test_generate_in_batches_prints_every_record_in_input_order(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("What is 2+2?\nSay hello.\nName a fruit.\n")
    common = ["generate", "--prompts", str(prompts), "--max-new-tokens", "10", "--lookup-tokens", "4"]
    alone, batched = cli(*common), cli(*common, "--batch-size", "2")
    assert alone.returncode == 0 and batched.returncode == 0, alone.stderr + batched.stderr
    records = [json.loads(line) for line in batched.stdout.splitlines()]
    assert [r["prompt"] for r in records] == ["What is 2+2?", "Say hello.", "Name a fruit."]
    assert [r["tokens"] for r in records] == [json.loads(line)["tokens"] for line in alone.stdout.splitlines()]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tree", "[[1, 1]]"], "no parent"),
        (["--tree", "nonsense"], "unknown tree preset"),
        (["--max-new-tokens", "0"], "max_new_tokens"),
        (["--heads", "/nonexistent/heads"], "does not exist"),
        (["--lookup-tokens", "-1"], "tokens >= 1"),
        (["--lookup-tokens", "4", "--lookup-ngram", "3", "2"], "min_ngram <= max_ngram"),
        (["--temperature", "-1"], "--temperature must be >= 0"),
        (["--temperature", "0.7", "--top-p", "0"], "--top-p must be in (0, 1]"),
        (["--temperature", "0.7", "--top-k", "0"], "--top-k must be >= 1"),
        (["--temperature", "0.7", "--sampling", "typical", "--posterior-threshold", "0"], "posterior threshold"),
        (["--num-return-sequences", "2"], "needs sampling"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
    ],
)
def test_generate_bad_input(args, message):
    """Each refused in one line, before any model loads."""
    out = cli("generate", "--prompt", "hi", *args)
    assert out.returncode == 2
    assert message in out.stderr


def test_wrong_heads_for_the_model(tmp_path):
    save_heads(random_heads(2), tmp_path / "tiny-heads")
    out = cli("generate", "--prompt", "hi", "--heads", str(tmp_path / "tiny-heads"))
    assert out.returncode == 2 and "hidden size 32 but the base model has 576" in out.stderr
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    out = cli("calibrate", "--heads", str(tmp_path / "tiny-heads"), "--prompts", str(prompts), "--out", str(tmp_path / "a.json"))
    assert out.returncode == 2 and "hidden size" in out.stderr


def test_calibrate_writes_an_accuracy_table(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Write a haiku about rain.\nList two fruits.\n")
    out = cli("calibrate", "--prompts", str(prompts), "--out", str(tmp_path / "acc.json"), "--max-new-tokens", "24", "--top-k", "5")
    assert out.returncode == 0, out.stderr
    table = json.loads((tmp_path / "acc.json").read_text())
    assert table["format"] == "medusa-accuracy/1" and table["top_k"] == 5
    assert len(table["acc"]) == 4 and all(len(row) == 5 and sum(row) <= 1 + 1e-6 for row in table["acc"])
    assert table["samples"] == len(table["ranks"]) > 0
    assert all(len(r) == 4 and all(-1 <= x < 5 for x in r) for r in table["ranks"])  # -1: not in the top 5


def test_train_and_calibrate_refuse_bad_prompt_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    for command in (["train-heads", "--out", str(tmp_path / "h")], ["calibrate", "--out", str(tmp_path / "a.json")]):
        out = cli(*command, "--prompts", str(empty))
        assert out.returncode == 2 and "has no prompts" in out.stderr
    long = tmp_path / "long.txt"
    long.write_text("word " * 9000 + "\n")
    out = cli("calibrate", "--prompts", str(long), "--out", str(tmp_path / "a.json"))
    assert out.returncode == 2 and "exceeds the model's context of 8192" in out.stderr


def test_generate_with_a_tree_file_uses_its_lookup(tmp_path):
    from medusa_core.spec.trees import save_tree_file
    from medusa_core.spec.lookup import LookupConfig

    tree = tmp_path / "t.json"
    save_tree_file(tree, [[0]], num_heads=4, top_k=1, lookup=LookupConfig(5, 3, 1))
    out = cli("generate", "--prompt", "Repeat: a b c d, a b c d, a b c d.", "--max-new-tokens", "8", "--tree", str(tree), "--json")
    assert out.returncode == 0, out.stderr
    settings = json.loads(out.stdout)["settings"]
    assert (settings["lookup_tokens"], settings["lookup_min_ngram"], settings["lookup_max_ngram"]) == (5, 1, 3)


def test_an_internal_fault_keeps_its_traceback(tmp_path):
    """User errors print one line; a fault inside the code is not disguised as one."""
    script = (
        "import sys, medusa_core.__main__ as m\n"
        "def boom(args): raise RuntimeError('internal fault')\n"
        "m.COMMANDS['generate'] = (m.COMMANDS['generate'][0], boom)\n"
        "sys.exit(m.main(['generate', '--prompt', 'x']))\n"
    )
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 1 and "Traceback" in out.stderr and "internal fault" in out.stderr


def test_train_heads_resumes_after_a_kill(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Say hi.\nCount to five.\nName a planet.\nWhat is tea?\nName a colour.\n")
    out_dir = tmp_path / "h"
    common = ["train-heads", "--prompts", str(prompts), "--out", str(out_dir), "--max-new-tokens", "24",
              "--batch-size", "2", "--checkpoint-every", "1"]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "medusa_core", *common, "--epochs", "8"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 400
        while not (out_dir / "training-checkpoint.pt").is_file():
            assert proc.poll() is None and time.time() < deadline, "training ended before its first checkpoint"
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        proc.kill()  # SIGKILL: no clean-up runs
        proc.wait()
    assert not (out_dir / "medusa_lm_head.safetensors").exists()
    other = cli(*common, "--epochs", "8", "--lr", "0.01")  # resuming with other settings would be neither run
    assert other.returncode == 2 and "lr=0.001 (now 0.01)" in other.stderr and "Traceback" not in other.stderr
    out = cli(*common, "--epochs", "8")
    assert out.returncode == 0, out.stderr
    assert "resumed from step" in out.stdout
    assert "head 0: top-1" in out.stdout
    assert json.loads((out_dir / "config.json").read_text())["medusa_num_heads"] == 4
    card = json.loads((out_dir / "training.json").read_text())["training"]
    assert 0 < card["loss_vocabulary"] < 49152  # the loss ran over the answers' tokens only


def test_gpu_check_script_runs_on_the_cpu_path(tmp_path):
    """The prepared GPU check runs end to end on the CPU: CUDA tests skip, both dtypes bench."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("Say hi.\nName a planet.\n")  # short: bf16 on a CPU is slow
    env = os.environ | {"DEVICE": "cpu", "OUT": str(tmp_path), "PROMPT_FILE": str(prompts), "PROMPTS": "2",
                        "TOKENS": "3", "WARMUP": "1", "PYTHON": sys.executable, "PYTHONPATH": str(ROOT),
                        "BATCH_SIZES": "1,2", "METHODS": "medusa-default", "LENGTH_TREE": ""}
    out = subprocess.run(["bash", "scripts/gpu_check.sh"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "skipped" in (tmp_path / "cuda-tests.txt").read_text()
    for dtype in ("float32", "bfloat16"):
        bench = json.loads((tmp_path / f"bench-cpu-{dtype}.json").read_text())
        assert bench["machine"]["device"] == "cpu" and bench["settings"]["max_new_tokens"] == 3
        assert all("near_tie_mismatches" in m for m in bench["methods"])
        assert {m["name"] for m in bench["methods"]} == {"hf-greedy", "medusa-default"}
    batched = json.loads((tmp_path / "batch-cpu.json").read_text())
    assert {m["batch_size"] for m in batched["methods"]} == {1, 2}
    names = {m["name"] for m in batched["methods"]}
    assert "hf-greedy" in names and len(names) == 2
    assert all(n.startswith(("hf-greedy", "medusa-default")) for n in names)


def test_distill_resumes_after_a_kill_and_refuses_other_settings(tmp_path):
    from medusa_core.training.distill_chunks import load_distilled, read_chunk

    prompts = tmp_path / "p.txt"
    prompts.write_text("Say hi.\nCount to five.\nName a planet.\nWhat is tea?\n")
    out_dir = tmp_path / "d"
    common = ["distill", "--prompts", str(prompts), "--out", str(out_dir), "--chunk-size", "1", "--batch-size", "1"]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "medusa_core", *common, "--max-new-tokens", "48"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (out_dir / "chunk-00000.json.xz").is_file():
            assert proc.poll() is None and time.time() < deadline, "distill ended before its first chunk"
            time.sleep(0.1)
    finally:
        proc.kill()  # SIGKILL mid-run: no clean-up
        proc.wait()
    first = (out_dir / "chunk-00000.json.xz").read_bytes()
    done_before = len(list(out_dir.glob("chunk-*.json.xz")))
    assert done_before < 4 and not list(out_dir.glob("*.partial"))
    other = cli(*common, "--max-new-tokens", "24")
    assert other.returncode == 2 and "max_new_tokens=48" in other.stderr
    out = cli(*common, "--max-new-tokens", "48")
    assert out.returncode == 0, out.stderr
    assert (out_dir / "chunk-00000.json.xz").read_bytes() == first  # kept, not regenerated
    rows = [row for i in range(4) for row in read_chunk(out_dir / f"chunk-{i:05d}.json.xz")["rows"]]
    assert [r["prompt"] for r in rows] == [0, 1, 2, 3]
    conversations = load_distilled([out_dir])
    assert len(conversations) == 4 and all(0 < len(c.response_ids) <= 48 for c in conversations)
    assert f"{sum(len(c.response_ids) for c in conversations):,} answer tokens" in out.stdout


def test_evaluate_reports_trees_with_and_without_lookup_and_head_accuracy(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Write a haiku about rain.\nList two fruits.\n")
    out = cli("evaluate", "--prompts", str(prompts), "--max-new-tokens", "16", "--tree", "wide=full-2x2",
              "--out", str(tmp_path / "e.json"))
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["format"] == "medusa-evaluation/1" and data["prompts"] == 2
    assert [t["name"] for t in data["trees"]] == ["default", "chain-4", "wide"]
    assert all(t["identical"] and t["tokens_per_step_heads"] >= 1 for t in data["trees"])
    assert all(t["tokens_per_step_with_lookup"] >= 1 for t in data["trees"])
    assert len(data["top1"]) == 4 and all(0 <= a <= b <= 1 for a, b in zip(data["top1"], data["top5"]))
    assert "tokens/step, heads alone" in out.stdout and "| 0 |" in out.stdout


def test_generate_samples_n_continuations_with_consecutive_seeds():
    out = cli("generate", "--prompt", "Name a colour.", "--max-new-tokens", "6", "--temperature", "0.9", "--top-p", "0.9",
              "--seed", "5", "--num-return-sequences", "3")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["settings"]["seed"] for r in records] == [5, 6, 7]
    assert all(r["settings"]["mode"] == "exact" and r["settings"]["top_p"] == 0.9 for r in records)
    assert all(len(r["steps"][0]["drawn"]) == len(r["steps"][0]["accepted"]) for r in records)


def test_calibrate_for_sampling_writes_a_probability_table(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Write a haiku about rain.\nList two fruits.\n")
    out = cli("calibrate", "--prompts", str(prompts), "--out", str(tmp_path / "acc.json"), "--max-new-tokens", "16",
              "--top-k", "4", "--temperature", "0.7")
    assert out.returncode == 0, out.stderr
    table = json.loads((tmp_path / "acc.json").read_text())
    assert table["format"] == "medusa-accuracy/1" and table["top_k"] == 4 and "ranks" not in table
    assert "exact sampling (temperature 0.7" in table["source"]
    assert all(len(row) == 4 and 0 < sum(row) <= 1 + 1e-9 for row in table["acc"])


def test_train_heads_on_distilled_chunks(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Say hi.\nName a planet.\nWhat is tea?\n")
    chunks = tmp_path / "chunks"
    made = cli("distill", "--prompts", str(prompts), "--out", str(chunks), "--chunk-size", "2", "--max-new-tokens", "24")
    assert made.returncode == 0, made.stderr
    out_dir = tmp_path / "h"
    out = cli("train-heads", "--distilled", str(chunks), "--out", str(out_dir), "--epochs", "1", "--batch-size", "8",
              "--loss", "soft", "--head-weight-decay", "0.8", "--proposal-vocab-size", "30")
    assert out.returncode == 0, out.stderr
    assert "head 0: top-1" in out.stdout and "proposal vocabulary" in out.stdout
    saved = json.loads((out_dir / "training.json").read_text())
    card = saved["training"]
    assert card["distilled"] == [str(chunks)] and card["prompts"] == ""
    assert card["loss"] == "soft" and card["head_weight_decay"] == 0.8 and card["loss_vocabulary"] == 30
    assert len(json.loads((out_dir / "proposal_vocab.json").read_text())["tokens"]) == 30
    assert len(saved["validation_proposal"]["top1"]) == 4
    # Continued: one more ResBlock, own projections onto the same 30 tokens and the root token as input;
    # the heads decode.
    grown_dir = tmp_path / "h-grown"
    grown = cli("train-heads", "--distilled", str(chunks), "--out", str(grown_dir), "--epochs", "1", "--batch-size", "8",
                "--init-heads", str(out_dir), "--num-layers", "2", "--own-projection", "--root-token")
    assert grown.returncode == 0, grown.stderr
    assert "the heads it started from, same rows" in grown.stdout
    card = json.loads((grown_dir / "training.json").read_text())
    assert card["training"]["root_token"]
    assert json.loads((grown_dir / "config.json").read_text())["medusa_explorer"]["root_token"]
    assert card["validation_proposal_before"]["top1"] == pytest.approx(saved["validation_proposal"]["top1"], abs=0.02)
    assert json.loads((grown_dir / "proposal_vocab.json").read_text()) == json.loads((out_dir / "proposal_vocab.json").read_text())
    decoded = cli("generate", "--heads", str(grown_dir), "--prompt", "Say hi.", "--max-new-tokens", "8", "--json")
    assert decoded.returncode == 0, decoded.stderr
    assert 0 < len(json.loads(decoded.stdout)["tokens"]) <= 8
    bad = cli("train-heads", "--distilled", str(chunks), "--out", str(tmp_path / "h3"), "--head-weight-decay", "1.5")
    assert bad.returncode == 2 and "head_weight_decay must be in (0, 1]" in bad.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = cli("train-heads", "--distilled", str(empty), "--out", str(tmp_path / "h2"))
    assert refused.returncode == 2 and "no distill chunks" in refused.stderr
