"""The batched benchmark: every method at every batch size, real figures, outputs checked."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medusa_core.bench.batching import cut_at_eos, groups_of, run_batch_benchmark
from medusa_core.bench.methods import HF_GREEDY, MEDUSA, Method
from medusa_core.bench.report import batch_table
from medusa_core.bench.runner import BenchConfig
from medusa_core.spec.lookup import LookupConfig
from medusa_core.spec.trees import full_tree
from tiny_models import medusa_of, random_heads, tiny_base

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [[3, 1, 4, 1, 5], [2, 7], [9, 9, 8, 4], [5], [6, 2, 6]]


def test_every_method_at_every_batch_size_with_outputs_checked():
    medusa = medusa_of(tiny_base("llama"), random_heads(4, 0))
    methods = [
        Method("hf-greedy", HF_GREEDY),
        Method("medusa-full", MEDUSA, tree=full_tree(2, 2), lookup=LookupConfig(3, 2, 1)),
    ]
    result = run_batch_benchmark(medusa, PROMPTS, methods, [1, 2, 4], BenchConfig(max_new_tokens=12, warmup_tokens=2))
    assert [(m.name, m.batch_size) for m in result.methods] == [
        (name, b) for b in (1, 2, 4) for name in ("hf-greedy", "medusa-full")
    ]
    for m in result.methods:
        assert m.total_tokens == 12 * len(PROMPTS)  # no EOS: every row runs its budget
        assert m.throughput > 0 and m.row_seconds_median > 0
        assert len(m.runs) == 0  # per-prompt runs belong to the unbatched bench
        assert m.identical_fraction == 1.0
    hf = [m for m in result.methods if m.kind == HF_GREEDY]
    assert all(m.tokens_per_step == 1.0 for m in hf)
    assert result.method("medusa-full", 4).tokens_per_step > 1.0
    assert result.method("medusa-full", 2).throughput_speedup == pytest.approx(
        result.method("medusa-full", 2).throughput / result.method("hf-greedy", 2).throughput
    )
    table = batch_table(result.to_json())
    assert "| 4 |" in table and "medusa-full" in table and ("stops paying" in table or "pays at every" in table)


def test_groups_and_eos_cuts():
    assert groups_of(PROMPTS, 2) == [PROMPTS[0:2], PROMPTS[2:4], PROMPTS[4:]]
    assert cut_at_eos([5, 7, 2, 2, 2], frozenset({2})) == [5, 7, 2]
    assert cut_at_eos([5, 7], frozenset({2})) == [5, 7]


def test_bad_batch_sizes_are_refused():
    medusa = medusa_of(tiny_base("llama"), random_heads(4, 0))
    with pytest.raises(ValueError, match="batch sizes must be >= 1"):
        run_batch_benchmark(medusa, PROMPTS, [Method("hf-greedy", HF_GREEDY)], [0])


def test_cli_batch_bench_on_the_default_model(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Name three colours.\nWhat is 2+2?\nSay hello.\nName a fruit.\n")
    out = tmp_path / "batch.json"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "medusa_core", "bench", "--prompts", str(prompts), "--num-prompts", "4",
         "--max-new-tokens", "8", "--warmup-tokens", "2", "--threads", "1", "--batch-sizes", "1,4",
         "--tree", "wide=full-3x1", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["settings"]["batch_sizes"] == [1, 4]
    entries = {(m["name"], m["batch_size"]) for m in data["methods"]}
    assert {("hf-greedy", 1), ("hf-greedy", 4), ("medusa-wide", 4)} <= entries
    assert any(name.startswith("medusa-default") for name, _ in entries)
    assert all(m["identical_fraction"] == 1.0 for m in data["methods"])  # fp32: batch 4 equals each prompt alone
    assert "| 4 |" in proc.stdout
