"""The Medusa decoding loop over a batch of prompts: draft, verify in one pass, accept, commit,
repeat; every row traced on its own.

Rows of different lengths share one cache (each packed at its front, the rest masked). Each row
has its own tree, accepted length, lookup matches, generator and stop; a finished row leaves the
batch (its cache rows are dropped), so it costs nothing from then on.
"""

from __future__ import annotations

import time
from typing import Iterator, Sequence

import torch
from transformers import DynamicCache

from medusa_core.engine.buffers import TreeBuffers
from medusa_core.engine.config import DecodeConfig
from medusa_core.engine.drafters import MergedTree
from medusa_core.engine.records import GenerationRecord, Node, StepRecord
from medusa_core.engine.step import Decoding, Row
from medusa_core.engine.verify import commit_rows, drop_rows, prefill_rows
from medusa_core.modeling.device import synchronize
from medusa_core.modeling.logits import final_logits
from medusa_core.modeling.models import MedusaModel, encode_prompt

__all__ = ["DecodeConfig", "PromptTooLongError", "generate", "generate_batch", "stream_generation", "stream_rows"]

BatchStep = dict[int, StepRecord]  # input index -> the step that row took


class PromptTooLongError(ValueError):
    """The prompt does not fit the model's context."""


def stop_in(tokens: Sequence[int], eos: frozenset[int], budget: int) -> tuple[list[int], str | None]:
    """Cut emitted tokens at the first EOS (kept) or at the token budget."""
    out: list[int] = []
    for tok in tokens:
        if len(out) == budget:
            return out, "max_new_tokens"
        out.append(tok)
        if tok in eos:
            return out, "eos"
    return out, ("max_new_tokens" if len(out) == budget else None)


def trace_nodes(medusa: MedusaModel, tree: MergedTree, buffers: TreeBuffers, with_text: bool) -> list[Node]:
    texts = medusa.base.tokenizer.batch_decode([[i] for i in tree.tokens]) if with_text else [""] * len(tree.tokens)
    return [
        Node(t, text, d, r, p, par, src)
        for t, text, d, r, p, par, src in zip(
            tree.tokens, texts, buffers.depths, tree.ranks, tree.probs, tree.parents, tree.sources
        )
    ]


def check_prompt_fits(prompt_len: int, context: int, tree_depth: int) -> None:
    if prompt_len == 0:
        raise PromptTooLongError("the prompt is empty")
    if prompt_len + tree_depth + 1 > context:
        raise PromptTooLongError(
            f"the prompt has {prompt_len} tokens but the model's context is {context} "
            f"(a step needs room for {tree_depth + 1} more)"
        )


def start_rows(
    medusa: MedusaModel,
    prompts: Sequence[str],
    config: DecodeConfig,
    prompt_ids: Sequence[Sequence[int]] | None,
    seeds: Sequence[int] | None,
    max_depth: int,
) -> list[Row]:
    if not prompts:
        raise ValueError("no prompts to decode")
    if prompt_ids is not None and len(prompt_ids) != len(prompts):
        raise ValueError(f"{len(prompt_ids)} token lists for {len(prompts)} prompts")
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    base = medusa.base
    rows = []
    for i, prompt in enumerate(prompts):
        ids = list(prompt_ids[i]) if prompt_ids is not None else encode_prompt(base.tokenizer, prompt, config.chat)
        check_prompt_fits(len(ids), base.context_length, max_depth)
        seed = config.seed if seeds is None else seeds[i]
        rows.append(Row(i, prompt, ids, seed, torch.Generator().manual_seed(seed)))
    return rows


def finish(medusa: MedusaModel, row: Row, paths: list[list[int]], config: DecodeConfig) -> GenerationRecord:
    base = medusa.base
    return GenerationRecord(
        model=base.name,
        heads=medusa.heads_name,
        device=str(base.device),
        dtype=str(base.dtype).removeprefix("torch."),
        tree=paths,
        settings=config.settings() | {"seed": row.seed},
        prompt=row.prompt,
        prompt_tokens=row.ids,
        tokens=row.out,
        text=base.tokenizer.decode(row.out, skip_special_tokens=True),
        steps=row.steps,
        seconds=row.seconds,
        stop_reason=row.stop or "context",
    )


@torch.inference_mode()  # a decorated generator re-enters the mode on every resume, on any thread
def stream_rows(
    medusa: MedusaModel,
    prompts: Sequence[str],
    tree: Sequence[Sequence[int]] | None = None,
    config: DecodeConfig = DecodeConfig(),
    prompt_ids: Sequence[Sequence[int]] | None = None,
    seeds: Sequence[int] | None = None,
) -> Iterator[BatchStep | list[GenerationRecord]]:
    """Decode all prompts as one batch. Yield {input index: StepRecord} for the rows that took each
    step, then the GenerationRecords in input order. Each row draws from its own generator
    (seeded by `seeds`, default config.seed for every row); a record's seconds run from the start
    of the batch to that row's last step."""
    decoding = Decoding(medusa, tree, config)
    base = medusa.base
    rows = start_rows(medusa, prompts, config, prompt_ids, seeds, decoding.max_depth)
    done: list[Row] = []
    synchronize(base.device)
    start = time.perf_counter()
    cache, hidden = prefill_rows(base.model, [row.ids for row in rows])  # [B, d]
    states = decoding.read_next(rows, hidden, final_logits(base.model, hidden), [len(row.ids) for row in rows])
    for row, state in zip(rows, states):
        row.state = state
    step_start = start
    while rows:
        full = [r for r in rows if r.state.prefix_len + decoding.max_depth + 1 > base.context_length]
        rows = leave(cache, rows, done, full, "context")
        if not rows:
            break
        result = decoding.step(cache, rows)
        commit_rows(cache, [row.state.prefix_len for row in rows], result.accepted)
        now = time.perf_counter()  # the transfers above waited for the device: no sync needed
        batch_step: BatchStep = {}
        for b, row in enumerate(rows):
            drafted_from = row.state.head_tokens
            tokens = [result.trees[b].tokens[i] for i in result.accepted[b]]
            emitted, row.stop = stop_in(tokens, base.eos_token_ids, config.max_new_tokens - len(row.out))
            row.out.extend(emitted)
            row.state = result.next_states[b]
            nodes = trace_nodes(medusa, result.trees[b], result.layouts[b], config.trace_text)
            step = StepRecord(nodes, result.accepted[b], emitted, now - step_start, result.drawn[b], drafted_from)
            row.steps.append(step)
            row.seconds = now - start
            batch_step[row.index] = step
        step_start = now
        rows = leave(cache, rows, done, [r for r in rows if r.stop is not None], None)
        yield batch_step
    paths = [list(p) for p in decoding.paths]
    yield [finish(medusa, row, paths, config) for row in sorted(done, key=lambda r: r.index)]


def leave(cache: DynamicCache, rows: list[Row], done: list[Row], leaving: list[Row], reason: str | None) -> list[Row]:
    """Drop the leaving rows from the batch and its cache; the cache is cut to its longest row."""
    if not leaving:
        return rows
    for row in leaving:
        row.stop = row.stop or reason
        done.append(row)
    keep = [b for b, row in enumerate(rows) if row not in leaving]
    if keep:
        drop_rows(cache, keep, [rows[b].state.prefix_len for b in keep])
    return [rows[b] for b in keep]


def stream_generation(
    medusa: MedusaModel,
    prompt: str,
    tree: Sequence[Sequence[int]] | None = None,
    config: DecodeConfig = DecodeConfig(),
    prompt_ids: Sequence[int] | None = None,
) -> Iterator[StepRecord | GenerationRecord]:
    """One prompt: yield a StepRecord per decoding step, then the GenerationRecord with the totals."""
    for item in stream_rows(medusa, [prompt], tree, config, None if prompt_ids is None else [prompt_ids]):
        yield item[0]


def generate(
    medusa: MedusaModel,
    prompt: str,
    tree: Sequence[Sequence[int]] | None = None,
    config: DecodeConfig = DecodeConfig(),
    prompt_ids: Sequence[int] | None = None,
) -> GenerationRecord:
    *_, record = stream_generation(medusa, prompt, tree, config, prompt_ids)
    assert isinstance(record, GenerationRecord)
    return record


def generate_batch(
    medusa: MedusaModel,
    prompts: Sequence[str],
    tree: Sequence[Sequence[int]] | None = None,
    config: DecodeConfig = DecodeConfig(),
    prompt_ids: Sequence[Sequence[int]] | None = None,
    seeds: Sequence[int] | None = None,
) -> list[GenerationRecord]:
    """Decode the prompts as one batch; the records come back in input order."""
    *_, records = stream_rows(medusa, prompts, tree, config, prompt_ids, seeds)
    return records
