"""The speed benchmark: runs on tiny models, reports every field, never asserts timings."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medusa_core.bench.evaluate import evaluate
from medusa_core.bench.runner import (
    BENCH_FORMAT,
    BenchConfig,
    default_methods,
    histogram,
    max_tree_depth,
    parse_tree_option,
    quantile,
    repo_relative,
    select_methods,
    run_benchmark,
)
from medusa_core.engine.precision import first_mismatch
from medusa_core.bench.methods import HF_ASSISTED, HF_GREEDY, MEDUSA, Method
from medusa_core.bench.report import markdown_table
from medusa_core.spec.lookup import LookupConfig
from medusa_core.spec.trees import TreeError, full_tree, save_tree_file
from tiny_models import ReferenceHeads, greedy_reference, medusa_of, random_heads, tiny_base

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [[3, 1, 4, 1, 5], [2, 7, 1, 8], [9, 9, 8]]
CONFIG = BenchConfig(max_new_tokens=10, warmup_tokens=3)

METHOD_KEYS = {
    "name", "kind", "tree_nodes", "tree", "aliases", "skipped", "skip_reason",
    "tokens_per_second_median", "tokens_per_second_min", "tokens_per_second_max",
    "tokens_per_second_p25", "tokens_per_second_p75",
    "speedup_median", "speedup_min", "speedup_max", "speedup_p25", "speedup_p75",
    "tokens_per_step", "seconds_per_step", "relative_step_cost", "acceptance_histogram", "identical_fraction",
    "total_tokens", "total_seconds", "total_steps", "runs",
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared, loaded CPU run 10x faster on one thread than on two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    return medusa_of(tiny_base("llama"), random_heads(4, seed=1))


@pytest.fixture(scope="module")
def result(tiny):
    """Every method, the assisted one with another tiny llama (same vocabulary) as its draft."""
    draft = tiny_base("llama", seed=5)
    methods = default_methods(tiny, [("full", full_tree(2, 2))], prompt_lookup_tokens=(2, 4), draft=draft)
    calls = []
    res = run_benchmark(tiny, PROMPTS, methods, CONFIG, draft, lambda *a: calls.append(a))
    return res, calls


def test_every_method_runs_and_reports_all_fields(result):
    res, _ = result
    data = json.loads(json.dumps(res.to_json()))
    assert data["format"] == BENCH_FORMAT
    assert {"machine", "model", "heads", "max_new_tokens", "prompts", "methods"} <= data.keys()
    assert data["prompts"] == 3 and data["max_new_tokens"] == 10
    assert {"cpu", "cores", "torch_threads", "torch", "transformers", "device", "device_name", "cpu_matmul_kernel"} <= data["machine"].keys()
    names = [m["name"] for m in data["methods"]]
    assert names == [HF_GREEDY, "hf-prompt-lookup-2", "hf-prompt-lookup-4", HF_ASSISTED, "ours-greedy",
                     "medusa-chain-4", "medusa-full"]
    for m in data["methods"]:
        assert METHOD_KEYS <= m.keys(), m["name"]
        assert not m["skipped"] and m["skip_reason"] is None
        assert len(m["runs"]) == 3
        assert m["tokens_per_second_min"] <= m["tokens_per_second_median"] <= m["tokens_per_second_max"]
        assert m["speedup_min"] <= m["speedup_median"] <= m["speedup_max"]
        assert sum(m["acceptance_histogram"]) == sum(r["steps"] for r in m["runs"]) > 0
        assert all(r["tokens"] == 10 for r in m["runs"])  # the tiny models have no EOS
        if m["kind"] != MEDUSA:  # transformers' steps emit exactly accepted + 1 tokens
            assert sum((n + 1) * c for n, c in enumerate(m["acceptance_histogram"])) == m["total_tokens"] == 30
    baseline = res.method(HF_GREEDY)
    assert baseline.speedup_median == baseline.speedup_min == baseline.speedup_max == 1.0
    assert baseline.tokens_per_step == 1.0 and baseline.acceptance_histogram == [30]
    assert baseline.relative_step_cost == pytest.approx(1.0)
    assert res.method("ours-greedy").tree_nodes == 0 and res.method("ours-greedy").tokens_per_step == 1.0
    assert res.method("medusa-full").tree_nodes == 6


def test_our_methods_are_paired_with_the_fastest_prompt_lookup(result):
    res, _ = result
    lookups = [res.method("hf-prompt-lookup-2"), res.method("hf-prompt-lookup-4")]
    reference = max(lookups, key=lambda m: m.tokens_per_second_median)
    assert res.prompt_lookup == reference.name
    for m in res.methods:
        if m.kind != MEDUSA:
            assert m.over_prompt_lookup_median is None and m.prompts_faster_than_prompt_lookup is None
            continue
        ratios = sorted(r.tokens_per_second / b.tokens_per_second for r, b in zip(m.runs, reference.runs))
        assert m.over_prompt_lookup_median == pytest.approx(ratios[1])  # 3 prompts: the middle one
        assert (m.over_prompt_lookup_min, m.over_prompt_lookup_max) == pytest.approx((ratios[0], ratios[-1]))
        assert m.prompts_faster_than_prompt_lookup == sum(x > 1 for x in ratios)
        assert m.prompts_compared_with_prompt_lookup == 3
    table = markdown_table(res.to_json())
    assert f"Against {reference.name} (the fastest prompt lookup here)" in table
    full = res.method("medusa-full")
    assert f"| medusa-full | {full.over_prompt_lookup_median:.2f}x (" in table
    assert f"| {full.prompts_faster_than_prompt_lookup} of 3 |" in table


def test_greedy_medusa_methods_are_identical_to_the_baseline(result):
    res, _ = result
    for m in res.methods:
        if m.kind == MEDUSA:
            assert m.identical_fraction == 1.0, m.name
            assert all(r.identical and r.first_mismatch is None for r in m.runs)


def test_round_robin_rotates_the_order_and_reports_progress(result):
    res, calls = result
    orders = {m.name: [r.order for r in m.runs] for m in res.methods}
    assert orders[HF_GREEDY] == [0, 6, 5]  # 7 methods: prompt p starts with method p
    assert orders["hf-prompt-lookup-2"] == [1, 0, 6]
    stages = [c[0] for c in calls]
    assert stages[0].startswith("warm-up") and stages[-1] == "bench"
    assert calls[-1][1:] == (21, 21)


def test_skipped_assisted_method_carries_its_reason(tiny):
    methods = default_methods(tiny, prompt_lookup_tokens=(3,))
    assisted = next(m for m in methods if m.kind == HF_ASSISTED)
    assert assisted.skip_reason and "--draft-model" in assisted.skip_reason
    res = run_benchmark(tiny, PROMPTS[:1], methods, BenchConfig(max_new_tokens=4, warmup_tokens=0))
    m = res.method(HF_ASSISTED)
    assert m.skipped and m.skip_reason == assisted.skip_reason
    assert m.tokens_per_second_median is None and m.runs == []
    table = markdown_table(res.to_json())
    assert "| hf-assisted | – | skipped: " in table
    for name in ("hf-greedy", "hf-prompt-lookup-3", "ours-greedy", "medusa-chain-4"):
        assert f"| {name}" in table


def test_oracle_heads_accept_the_whole_chain():
    base = tiny_base("llama")
    prompt, n = [3, 1, 4, 1, 5], 21
    reference = greedy_reference(base, prompt, n)
    medusa = medusa_of(base, ReferenceHeads(base, prompt, reference, 4, right=True))
    methods = [Method(HF_GREEDY, HF_GREEDY), Method("medusa-chain-4", MEDUSA, tree=((0,), (0, 0), (0, 0, 0), (0, 0, 0, 0)))]
    res = run_benchmark(medusa, [prompt], methods, BenchConfig(max_new_tokens=n, warmup_tokens=0))
    m = res.method("medusa-chain-4")
    assert m.identical_fraction == 1.0
    assert m.acceptance_histogram[4] == 4 and m.tokens_per_step > 4  # 21 tokens: 4 full steps + 1


def test_equal_trees_become_aliases_and_names_stay_unique(tiny, tmp_path):
    save_tree_file(tmp_path / "speed.json", [[0], [0, 0]], 4, 1)
    trees = [parse_tree_option("length=chain-4"), parse_tree_option(str(tmp_path / "speed.json")), parse_tree_option("full-2x2")]
    assert [t[0] for t in trees] == ["length", "speed", "full-2x2"]
    methods = default_methods(tiny, trees)
    chain = next(m for m in methods if m.name == "medusa-chain-4")
    assert chain.aliases == ("medusa-default", "medusa-length")
    assert [m.name for m in methods if m.kind == MEDUSA] == ["ours-greedy", "medusa-chain-4", "medusa-speed", "medusa-full-2x2"]
    with pytest.raises(ValueError, match="named 'x'"):
        default_methods(tiny, [("x", full_tree(2, 1)), ("x", full_tree(3, 1))])
    with pytest.raises(TreeError):
        default_methods(tiny, [("deep", full_tree(1, 5))])  # depth 5 > 4 heads
    with pytest.raises(ValueError, match="baseline"):
        run_benchmark(tiny, PROMPTS, [Method("m", MEDUSA, tree=())], CONFIG)


def test_statistics_helpers():
    assert quantile([1, 2, 3, 4], 0.5) == 2.5 and quantile([5], 0.25) == 5
    assert histogram([0, 2, 2, 1]) == [1, 1, 2] and histogram([]) == []
    assert first_mismatch([1, 2, 3], [1, 2, 3]) is None
    assert first_mismatch([1, 2, 3], [1, 5, 3]) == 1 and first_mismatch([1, 2], [1, 2, 3]) == 2


def test_cli_bench_on_the_default_model(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Name three colours.\nWhat is 2+2?\nSay hello.\n")
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "medusa_core", "bench", "--prompts", str(prompts), "--num-prompts", "2",
         "--max-new-tokens", "8", "--warmup-tokens", "2", "--threads", "1", "--tree", "wide=full-3x1", "--out", str(out), "--markdown", str(md)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "skipping hf-assisted: no draft model" in proc.stdout
    data = json.loads(out.read_text())
    assert data["format"] == BENCH_FORMAT and data["prompts"] == 2 and data["max_new_tokens"] == 8
    assert data["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and data["machine"]["torch_threads"] == 1
    methods = {m["name"]: m for m in data["methods"]}
    assert {"hf-greedy", "hf-prompt-lookup-10", "hf-assisted", "ours-greedy", "medusa-chain-4", "medusa-wide"} <= methods.keys()
    assert methods["hf-assisted"]["skipped"] and "smallest" in methods["hf-assisted"]["skip_reason"]
    for m in methods.values():
        assert METHOD_KEYS <= m.keys()
        if not m["skipped"]:
            assert len(m["runs"]) == 2 and m["tokens_per_second_median"] > 0
    assert md.read_text() in proc.stdout and "| medusa-wide | 3 |" in md.read_text()


def test_context_lookup_methods_run_beside_the_heads_alone(tiny, tmp_path):
    medusa = dataclasses.replace(tiny, default_lookup=LookupConfig(3))
    save_tree_file(tmp_path / "big.json", [[0], [1]], 4, 2, lookup=LookupConfig(5, 2))
    trees = [parse_tree_option(f"big={tmp_path / 'big.json'}")]
    assert trees[0][2] == LookupConfig(5, 2)
    methods = default_methods(medusa, trees, prompt_lookup_tokens=(3,))
    ours = [m for m in methods if m.kind == MEDUSA]
    assert [m.name for m in ours] == [
        "ours-greedy", "ours-lookup-3", "medusa-chain-4", "medusa-default+lookup-3", "medusa-big+lookup-5"
    ]
    assert max_tree_depth(ours) == 5
    res = run_benchmark(medusa, PROMPTS, [methods[0], *ours], CONFIG)
    big = res.method("medusa-big+lookup-5")
    assert (big.tree_nodes, big.lookup_tokens, big.identical_fraction) == (7, 5, 1.0)
    assert res.method("ours-lookup-3").identical_fraction == 1.0
    assert "| medusa-big+lookup-5 | 2+5 |" in markdown_table(res.to_json())


def test_selected_methods_keep_the_baseline_and_refuse_unknown_names(tiny):
    medusa = dataclasses.replace(tiny, default_lookup=LookupConfig(3))
    methods = default_methods(medusa, [("two", [[0], [0, 0]])], prompt_lookup_tokens=(3,))
    chosen = select_methods(methods, ["medusa-default+lookup-3", "medusa-two"])
    assert [m.name for m in chosen] == ["hf-greedy", "medusa-default+lookup-3", "medusa-two"]
    with pytest.raises(ValueError, match="unknown method.*medusa-nope.*this run has: hf-greedy"):
        select_methods(methods, ["medusa-nope"])


def test_heads_inside_the_repository_are_recorded_by_relative_path(tmp_path):
    assert repo_relative(str(ROOT / "heads" / "smollm2-135m-instruct")) == "heads/smollm2-135m-instruct"
    assert repo_relative("random") == "random" and repo_relative("org/medusa-heads") == "org/medusa-heads"
    assert repo_relative(str(tmp_path)) == str(tmp_path)


def test_evaluate_reports_every_prompt_of_every_run_and_scores_oracle_heads_perfectly():
    base = tiny_base("llama")
    prompt, n = [3, 1, 4, 1, 5], 21
    medusa = medusa_of(base, ReferenceHeads(base, prompt, greedy_reference(base, prompt, n), 4, right=True))
    chain = ((0,), (0, 0), (0, 0, 0), (0, 0, 0, 0))
    reports = []
    result = evaluate(medusa, [prompt, prompt], [("chain", chain, LookupConfig(3)), ("one", ((0,),), None)], n,
                      lambda *report: reports.append(report))
    runs = [r for r in reports if r[0].startswith("trees")]
    assert [r[1:] for r in runs] == [(i, 6) for i in range(1, 7)]  # 2 prompts x (chain off, chain on, one)
    stages = ["trees (chain, lookup off)", "trees (chain, lookup on)", "trees (one, lookup off)"]
    assert [r[0] for r in runs[::2]] == stages
    chain_score, one = result.trees
    assert chain_score.identical and one.identical and one.tokens_per_step_with_lookup is None
    assert chain_score.tokens_per_step_heads > 4 and 1 < one.tokens_per_step_heads <= 2
    assert result.top1[0] > 0.9 and all(a <= b for a, b in zip(result.top1, result.top5))
