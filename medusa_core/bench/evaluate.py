"""Heads on your own prompts: tokens per step for each tree with and without the context lookup,
every output checked against plain greedy, and each head's top-1 / top-5 accuracy on the set."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch

from optimizer.accuracy import accuracy_from_ranks

from medusa_core.bench.methods import hf_kwargs
from medusa_core.engine.loop import DecodeConfig, generate
from medusa_core.modeling.models import MedusaModel
from medusa_core.spec.lookup import LookupConfig
from medusa_core.spec.trees import Path_
from medusa_core.training.calibration import head_ranks

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TreeScore:
    name: str
    nodes: int
    lookup_tokens: int  # of the "with lookup" run (0: the tree has none to offer)
    tokens_per_step_heads: float  # context lookup off: the heads alone
    tokens_per_step_with_lookup: float | None  # None without a lookup
    identical: bool  # every output equals plain greedy, in both runs


@dataclass(frozen=True)
class Evaluation:
    prompts: int
    max_new_tokens: int
    positions: int  # answer positions the per-head accuracy counts
    top1: list[float]  # per head
    top5: list[float]
    trees: list[TreeScore]

    def to_json(self) -> dict:
        return {"format": "medusa-evaluation/1"} | asdict(self)


def tokens_per_step(
    medusa: MedusaModel,
    prompt_ids: Sequence[list[int]],
    tree: Sequence[Path_],
    config: DecodeConfig,
    reference: Sequence[list[int]],
    on_prompt: Callable[[], None] = lambda: None,
) -> tuple[float, bool]:
    tokens = steps = 0
    identical = True
    for ids, want in zip(prompt_ids, reference):
        record = generate(medusa, "", tree, config, prompt_ids=ids)
        tokens, steps = tokens + len(record.tokens), steps + record.num_steps
        identical &= record.tokens == want
        on_prompt()
    return tokens / max(1, steps), identical


def evaluate(
    medusa: MedusaModel,
    prompt_ids: Sequence[list[int]],
    trees: Sequence[tuple[str, Sequence[Path_], LookupConfig | None]],
    max_new_tokens: int = 128,
    progress: Progress | None = None,
) -> Evaluation:
    """Plain greedy (`model.generate`) first, then each tree twice (lookup off, then on). Progress is
    reported per prompt: a tree's run over a long prompt set takes minutes on a CPU."""
    report = progress or (lambda stage, done, total: None)
    base = medusa.base
    reference, ranks = [], []
    with torch.inference_mode():
        for i, ids in enumerate(prompt_ids):
            out = base.model.generate(**hf_kwargs(base, ids, max_new_tokens))
            reference.append(out[0, len(ids) :].tolist())
            ranks.append(head_ranks(medusa, ids + reference[-1], len(ids) - 1))
            report("plain greedy", i + 1, len(prompt_ids))
    table = accuracy_from_ranks(torch.cat(ranks).numpy(), 5)
    top1 = [float(row[0]) for row in table.acc]
    top5 = [float(sum(row)) for row in table.acc]
    scores = []
    total = len(prompt_ids) * sum(1 + (lookup is not None) for _, _, lookup in trees)
    done = itertools.count(1)

    def run(name: str, tree: Sequence[Path_], lookup: LookupConfig | None) -> tuple[float, bool]:
        stage = f"trees ({name}, lookup {'on' if lookup else 'off'})"
        config = DecodeConfig(max_new_tokens, trace_text=False, lookup=lookup)
        return tokens_per_step(medusa, prompt_ids, tree, config, reference, lambda: report(stage, next(done), total))

    for name, tree, lookup in trees:
        heads, same = run(name, tree, None)
        with_lookup = None
        if lookup is not None:
            with_lookup, same_too = run(name, tree, lookup)
            same &= same_too
        scores.append(TreeScore(name, len(tree), lookup.tokens if lookup else 0, heads, with_lookup, same))
    return Evaluation(len(prompt_ids), max_new_tokens, table.samples, top1, top5, scores)


def markdown(evaluation: Evaluation) -> str:
    lines = [
        f"{evaluation.prompts} prompts x {evaluation.max_new_tokens} new tokens, greedy.",
        "",
        "| tree | nodes | tokens/step, heads alone | tokens/step, with context lookup | identical to plain greedy |",
        "|---|---:|---:|---:|---|",
    ]
    for t in evaluation.trees:
        lookup = (
            f"{t.tokens_per_step_with_lookup:.2f} (+{t.lookup_tokens}-token lookup)"
            if t.tokens_per_step_with_lookup
            else "–"
        )
        lines.append(
            f"| {t.name} | {t.nodes} | {t.tokens_per_step_heads:.2f} | {lookup} | {'yes' if t.identical else 'NO'} |"
        )
    lines += [
        "",
        f"Per-head accuracy on the plain greedy answers ({evaluation.positions} positions):",
        "",
        "| head | top-1 | top-5 |",
        "|---|---:|---:|",
    ]
    lines += [f"| {k} | {a:.3f} | {b:.3f} |" for k, (a, b) in enumerate(zip(evaluation.top1, evaluation.top5))]
    return "\n".join(lines)
