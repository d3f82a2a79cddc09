"""Per-head acceptance under exact sampling, for trees optimised for sampling.

Exact sampling accepts a node when the token drawn at its parent is the node's token, which
happens with probability p(token) under the model's processed distribution there. So where greedy
calibration counts how often head k's rank-r token is the model's own next token, this one
averages that token's probability: acc[k][r] = E_t[p(head k's rank-r token at t | the sampled text
through t + k + 1)], over the positions of continuations sampled at the chosen settings. The table
has the greedy table's format (medusa-accuracy/1, the optimizer's), without rank vectors, so the
optimizer's expected length (a product of acc along each path, under independence) and its exact
optimum serve sampling too. At temperature -> 0 it is the greedy table.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from optimizer.accuracy import AccuracyTable

from medusa_core.engine.loop import DecodeConfig, generate
from medusa_core.engine.step import head_topk, heads_logits
from medusa_core.engine.sampling import SamplingConfig, processed_probs
from medusa_core.engine.verify import forward_hidden, new_cache
from medusa_core.modeling.logits import final_logits
from medusa_core.modeling.models import MedusaModel
from medusa_core.training.distill_data import encode_prompts


def acceptance_probabilities(
    medusa: MedusaModel, tokens: Sequence[int], start: int, config: SamplingConfig, top_k: int
) -> torch.Tensor:
    """[T, K, k]: for t = start.. with every target present, the model's processed probability of
    head k's rank-r token at the position that head predicts (t + k + 2)."""
    num_heads = medusa.num_heads
    ids = torch.tensor(tokens, device=medusa.base.device)  # [L]
    positions = torch.arange(len(tokens), device=ids.device)[None]
    hidden = forward_hidden(medusa.base.model, ids[None], new_cache(), positions)  # [L, d]
    t = torch.arange(start, len(tokens) - num_heads - 1, device=ids.device)  # [T]
    if t.numel() == 0:
        return torch.empty(0, num_heads, top_k)
    target = processed_probs(final_logits(medusa.base.model, hidden), config)  # [L, V]: row j is token j + 1's
    proposed, _ = head_topk(heads_logits(medusa, hidden[t], roots=ids[t + 1]), top_k, medusa.proposal)  # [K, T, k]
    per_head = [target[t + k + 1].gather(-1, proposed[k]) for k in range(num_heads)]  # K x [T, k]
    return torch.stack(per_head, dim=1).cpu()  # [T, K, k]


def calibrate_sampling(
    medusa: MedusaModel,
    prompts: Sequence[str],
    config: SamplingConfig,
    max_new_tokens: int = 128,
    top_k: int = 10,
    progress: Callable[[int, int], None] | None = None,
) -> AccuracyTable:
    """Sample a continuation of each prompt (exact sampling, seed = the prompt's index, the heads'
    default tree) and average the acceptance probabilities along it."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    encoded = encode_prompts(medusa.base, prompts, max_new_tokens)
    chunks = []
    with torch.inference_mode():
        for i, (prompt, ids) in enumerate(zip(prompts, encoded)):
            decode = DecodeConfig(max_new_tokens, seed=i, trace_text=False, sampling=config)
            record = generate(medusa, prompt, None, decode, prompt_ids=ids)
            chunks.append(acceptance_probabilities(medusa, ids + record.tokens, len(ids) - 1, config, top_k))
            if progress:
                progress(i + 1, len(prompts))
    probs = torch.cat(chunks) if chunks else torch.empty(0, medusa.num_heads, top_k)
    if probs.shape[0] == 0:
        raise ValueError("calibration produced no positions: the continuations were too short")
    acc = probs.double().mean(dim=0).clamp(max=1.0)  # [K, k]
    rows = [[float(v) for v in row] for row in acc]
    for row in rows:  # distinct tokens of one distribution: their probabilities add up to at most 1
        total = sum(row)
        if total > 1:
            row[:] = [v / total for v in row]
    settings = f"temperature {config.temperature}, top-p {config.top_p}, top-k {config.top_k or 'off'}"
    return AccuracyTable(acc=rows, model=medusa.base.model_id, heads=medusa.heads_name, samples=int(probs.shape[0]),
                         source=f"exact sampling ({settings}): mean probability of each head's rank-r token")
