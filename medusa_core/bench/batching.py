"""Throughput against batch size: batched plain greedy (`model.generate`, left padding) and
batched Medusa, on the same prompts.

For each batch size B the prompts are cut into consecutive groups of B; each group is run by
every method once, the starting method rotating from group to group, after a warm-up of every
method at that batch size. A method's figures at B: throughput (all new tokens over all
seconds), the batch's tokens/s per group and its speed-up over hf-greedy on the same group,
per-row latency (from the batch's start to that row's last token), tokens per step, and
identity with each prompt decoded alone by hf-greedy.
"""

from __future__ import annotations

import gc
import statistics
from dataclasses import dataclass
from typing import Sequence

import torch

from medusa_core.bench.methods import HF_GREEDY, MEDUSA, Method, hf_kwargs, timed
from medusa_core.bench.runner import BASELINE, BenchConfig, BenchResult, MethodResult, Progress, bench_result, spread
from medusa_core.engine.loop import DecodeConfig, generate_batch
from medusa_core.engine.precision import first_mismatch
from medusa_core.modeling.models import BaseModel, MedusaModel


@dataclass(frozen=True)
class BatchRun:
    """One group of prompts decoded at once."""

    tokens: list[list[int]]  # per row, cut at its first EOS
    seconds: float  # the whole batch
    row_seconds: list[float]  # per row: from the batch's start to its last token
    steps: list[int]  # per row: forward passes that row took part in

    @property
    def tokens_per_second(self) -> float:
        return sum(len(t) for t in self.tokens) / self.seconds if self.seconds > 0 else 0.0


def cut_at_eos(tokens: list[int], eos: frozenset[int]) -> list[int]:
    """A batched generate pads finished rows after their EOS; the answer ends at the EOS."""
    for i, tok in enumerate(tokens):
        if tok in eos:
            return tokens[: i + 1]
    return tokens


def hf_greedy_batch(base: BaseModel, rows: Sequence[Sequence[int]], max_new_tokens: int) -> BatchRun:
    """transformers' batched greedy: prompts left-padded, every row runs until the last stops."""
    width = max(len(r) for r in rows)
    kwargs = hf_kwargs(base, rows[0], max_new_tokens)
    pad = kwargs["pad_token_id"]
    kwargs["input_ids"] = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows], device=base.device)
    kwargs["attention_mask"] = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=base.device)
    with torch.inference_mode():
        out, seconds = timed(base.device, lambda: base.model.generate(**kwargs))
    tokens = [cut_at_eos(row, base.eos_token_ids) for row in out[:, width:].tolist()]
    passes = out.shape[1] - width
    return BatchRun(tokens, seconds, [seconds] * len(rows), [passes] * len(rows))


def medusa_batch(
    medusa: MedusaModel, method: Method, rows: Sequence[Sequence[int]], max_new_tokens: int
) -> BatchRun:
    config = DecodeConfig(max_new_tokens, trace_text=False, lookup=method.lookup)
    tree = [list(p) for p in method.tree or ()]
    records, seconds = timed(
        medusa.base.device, lambda: generate_batch(medusa, [""] * len(rows), tree, config, prompt_ids=rows)
    )
    return BatchRun([r.tokens for r in records], seconds, [r.seconds for r in records], [r.num_steps for r in records])


def run_method(medusa: MedusaModel, method: Method, rows: Sequence[Sequence[int]], max_new_tokens: int) -> BatchRun:
    if method.kind == HF_GREEDY:
        return hf_greedy_batch(medusa.base, rows, max_new_tokens)
    return medusa_batch(medusa, method, rows, max_new_tokens)


def batch_methods(methods: Sequence[Method]) -> list[Method]:
    """The methods that decode batches: hf-greedy (first) and our loop's."""
    kept = [m for m in methods if m.skip_reason is None and m.kind in (HF_GREEDY, MEDUSA)]
    if not kept or kept[0].kind != HF_GREEDY:
        raise ValueError(f"the first method must be the {HF_GREEDY} baseline")
    return kept


def groups_of(prompt_ids: Sequence[Sequence[int]], size: int) -> list[list[list[int]]]:
    return [[list(p) for p in prompt_ids[i : i + size]] for i in range(0, len(prompt_ids), size)]


def timed_groups(
    medusa: MedusaModel,
    methods: Sequence[Method],
    prompt_ids: Sequence[Sequence[int]],
    size: int,
    config: BenchConfig,
    report: Progress,
) -> dict[str, list[BatchRun]]:
    """Warm every method up at this batch size, then one round per group, rotating the first."""
    groups = groups_of(prompt_ids, size)
    if config.warmup_tokens:
        for m in methods:
            run_method(medusa, m, groups[0], config.warmup_tokens)
    runs: dict[str, list[BatchRun]] = {m.name: [] for m in methods}
    for g, group in enumerate(groups):
        shift = g % len(methods) if config.rotate else 0
        gc.collect()
        for m in list(methods[shift:]) + list(methods[:shift]):
            report(f"batch {size} (group {g + 1}/{len(groups)}, {m.name})", g, len(groups))
            runs[m.name].append(run_method(medusa, m, group, config.max_new_tokens))
    return runs


def summarise_batch(
    method: Method, size: int, runs: Sequence[BatchRun], baseline: Sequence[BatchRun], reference: Sequence[list[int]]
) -> MethodResult:
    """A method's figures at one batch size; `reference` is each prompt decoded alone by hf-greedy."""
    result = MethodResult(
        method.name, method.kind, method.tree_nodes,
        [list(p) for p in method.tree] if method.tree is not None else None,
        list(method.aliases), method.draft_tokens, method.lookup.tokens if method.lookup else 0,
    )
    result.batch_size = size
    rows = [tokens for run in runs for tokens in run.tokens]
    tps = [r.tokens_per_second for r in runs]
    speedups = [r.tokens_per_second / b.tokens_per_second for r, b in zip(runs, baseline) if b.tokens_per_second > 0]
    for key, value in (spread(tps, "tokens_per_second") | spread(speedups, "speedup")).items():
        setattr(result, key, value)
    result.total_tokens = sum(len(t) for t in rows)
    result.total_seconds = sum(r.seconds for r in runs)
    result.total_steps = sum(sum(r.steps) for r in runs)
    result.throughput = result.total_tokens / result.total_seconds if result.total_seconds > 0 else 0.0
    base_tokens = sum(len(t) for r in baseline for t in r.tokens)
    base_seconds = sum(r.seconds for r in baseline)
    result.throughput_speedup = result.throughput / (base_tokens / base_seconds) if base_tokens else None
    result.tokens_per_step = result.total_tokens / max(1, result.total_steps)
    result.row_seconds_median = statistics.median([s for r in runs for s in r.row_seconds])
    result.identical_fraction = sum(first_mismatch(t, ref) is None for t, ref in zip(rows, reference)) / len(rows)
    return result


def run_batch_benchmark(
    medusa: MedusaModel,
    prompt_ids: Sequence[Sequence[int]],
    methods: Sequence[Method],
    batch_sizes: Sequence[int],
    config: BenchConfig = BenchConfig(),
    progress: Progress | None = None,
) -> BenchResult:
    """Every method at every batch size; entries carry their batch_size. hf-greedy at batch 1 is
    also the reference every row's output is compared with."""
    if not prompt_ids:
        raise ValueError("no prompts to benchmark")
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    methods = batch_methods(methods)
    report = progress or (lambda stage, done, total: None)
    base = medusa.base
    reference = [hf_greedy_batch(base, [ids], config.max_new_tokens).tokens[0] for ids in prompt_ids]
    results: list[MethodResult] = []
    gc.collect()
    gc.freeze()  # what survives now (models, libraries) is never walked again inside the timings
    try:
        for size in sorted(set(batch_sizes)):
            runs = timed_groups(medusa, methods, prompt_ids, size, config, report)
            baseline = runs[methods[0].name]
            results += [summarise_batch(m, size, runs[m.name], baseline, reference) for m in methods]
    finally:
        gc.unfreeze()
    settings = {"baseline": BASELINE, "batch_sizes": sorted(set(batch_sizes))}
    return bench_result(medusa, config, len(prompt_ids), settings, results)
