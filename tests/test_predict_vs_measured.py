"""scripts/predict_vs_measured.py end to end on a tiny model: predicted and measured figures per setup."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from medusa_core.spec.trees import save_tree_file
from optimizer.accuracy import LookupOutcomes, accuracy_from_ranks, save_accuracy_table
from optimizer.profile import load_latency_profile

REPO = Path(__file__).resolve().parent.parent


def test_the_script_prints_and_writes_predicted_against_measured(tmp_path):
    rng = np.random.default_rng(0)
    ranks = rng.integers(-1, 3, size=(60, 4)).tolist()
    lookups = (LookupOutcomes(2, 3, 8, np.full(60, 2), rng.integers(0, 3, size=60)),)
    save_accuracy_table(accuracy_from_ranks(ranks, 10, segments=(30, 30), lookups=lookups), tmp_path / "acc.json")
    save_tree_file(tmp_path / "tree.json", [[0], [1]], 4, 10, lookup=None)
    (tmp_path / "prompts.txt").write_text("hello there\nsay something\nthird\n")
    out = tmp_path / "result.json"
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "scripts/predict_vs_measured.py", "--accuracy", str(tmp_path / "acc.json"),
         "--prompts", str(tmp_path / "prompts.txt"), "--num-prompts", "2", "--max-new-tokens", "6",
         "--model", "tests.test_optimizer_tune:tiny_medusa", "--setup", f"tree={tmp_path / 'tree.json'}",
         "--setup", f"with lookup={tmp_path / 'tree.json'}:8", "--profile-out", str(tmp_path / "p.json"),
         "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "| tree | 2 | 0 |" in done.stdout and "| with lookup | 2 | 8 |" in done.stdout
    data = json.loads(out.read_text())
    assert [r["setup"] for r in data["rows"]] == ["tree", "with lookup"] and data["num_prompts"] == 2
    for row in data["rows"]:
        assert row["tokens"] == 12 and row["steps"] >= 2  # 6 tokens for each prompt, decoded in steps
        assert row["predicted_tokens_per_second"] > 0 and row["measured_tokens_per_second"] > 0
    profile = load_latency_profile(tmp_path / "p.json")
    assert profile.has_step_model and profile.meta["repeats"] == 3  # a round after each prompt, one at the end
