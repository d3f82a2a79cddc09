"""Per-head accuracy: where the base model's true future tokens rank in each head's guesses.

For every position t of a greedy continuation (the last prompt token onward), head k's rank of
the token the model really produced at t+k+2 is recorded. The table (medusa-accuracy/1, owned by
optimizer.accuracy) holds acc[k][r] = P(rank == r) and the per-position rank vectors for replay,
the positions per prompt, and per n-gram range what a context lookup would have drafted at each
position (the state where the pending root is token t+1) and how much of it was right.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from optimizer.accuracy import AccuracyTable, LookupOutcomes, accuracy_from_ranks

from medusa_core.engine.loop import DecodeConfig, generate
from medusa_core.engine.step import heads_logits
from medusa_core.training.distill_data import encode_prompts
from medusa_core.modeling.models import MedusaModel
from medusa_core.engine.verify import forward_hidden, new_cache
from medusa_core.spec.lookup import LookupConfig, find_continuation

# The n-gram ranges `optimizer tune` may choose (min 1-3, max up to min + 2), longest chain it may draft.
LOOKUP_NGRAM_RANGES: tuple[tuple[int, int], ...] = tuple((lo, lo + span) for lo in (1, 2, 3) for span in (0, 1, 2))
LOOKUP_MAX_TOKENS = 16

def head_ranks(medusa: MedusaModel, tokens: Sequence[int], start: int) -> torch.Tensor:
    """Ranks [T, K] of the true tokens t+k+2 in head k's logits, for t = start.. with all K
    targets present. Ranks are exact (count of strictly higher logits), so ties favour the truth;
    with a proposal vocabulary they are ranks within it, as decoding proposes."""
    k = medusa.num_heads
    ids = torch.tensor(tokens, device=medusa.base.device)  # [L]
    hidden = forward_hidden(medusa.base.model, ids[None], new_cache(), torch.arange(len(tokens), device=ids.device)[None])
    t = torch.arange(start, len(tokens) - k - 1, device=ids.device)  # [T] positions with every target
    if t.numel() == 0:
        return torch.empty(0, k, dtype=torch.long)
    logits = heads_logits(medusa, hidden[t], roots=ids[t + 1])  # [K, T, U]
    targets = torch.stack([ids[t + j + 2] for j in range(k)])  # [K, T]
    if medusa.proposal is None:
        return rank_of(logits, targets).T.cpu()  # [T, K]
    # Ranks among the tokens the heads can propose; a token outside them is never proposed.
    positions = medusa.proposal.positions(targets, medusa.base.vocab_size)  # [K, T], -1 outside
    ranks = rank_of(logits, positions.clamp(min=0))
    return torch.where(positions >= 0, ranks, medusa.proposal.size).T.cpu()  # [T, K]


def lookup_outcome(tokens: Sequence[int], t: int, config: LookupConfig) -> tuple[int, int]:
    """(drafted, right) of a lookup at the state whose context ends with pending root t + 1."""
    chain = find_continuation(tokens[: t + 2], config)
    right = 0
    for drafted, true in zip(chain, tokens[t + 2 :]):
        if drafted != true:
            break
        right += 1
    return len(chain), right


def lookup_outcomes(
    tokens: Sequence[int], start: int, count: int, ranges: Sequence[tuple[int, int]], max_tokens: int
) -> list[tuple[list[int], list[int]]]:
    """Per n-gram range: (drafted, right) lists for positions start .. start + count - 1."""
    found = []
    for low, high in ranges:
        config = LookupConfig(max_tokens, high, low)
        pairs = [lookup_outcome(tokens, t, config) for t in range(start, start + count)]
        found.append(([p[0] for p in pairs], [p[1] for p in pairs]))
    return found


def rank_of(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits [K, T, U], targets [K, T] -> how many logits beat the target's [K, T]."""
    true_logit = logits.gather(-1, targets[..., None])  # [K, T, 1]
    return (logits > true_logit).sum(-1)


def calibrate(
    medusa: MedusaModel,
    prompts: Sequence[str],
    max_new_tokens: int = 128,
    top_k: int = 10,
    progress: Callable[[int, int], None] | None = None,
    lookup_ranges: Sequence[tuple[int, int]] = LOOKUP_NGRAM_RANGES,
    lookup_max_tokens: int = LOOKUP_MAX_TOKENS,
) -> AccuracyTable:
    """Decode each prompt greedily (losslessly, with the heads' default tree) and rank; the table
    (medusa-accuracy/1) is the optimizer's, its one owner."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    encoded = encode_prompts(medusa.base, prompts, max_new_tokens)
    all_ranks = []
    drafted: list[list[int]] = [[] for _ in lookup_ranges]
    right: list[list[int]] = [[] for _ in lookup_ranges]
    with torch.inference_mode():
        for i, (prompt, ids) in enumerate(zip(prompts, encoded)):
            record = generate(medusa, prompt, None, DecodeConfig(max_new_tokens, trace_text=False), prompt_ids=ids)
            tokens = ids + record.tokens
            all_ranks.append(head_ranks(medusa, tokens, len(ids) - 1))
            outcomes = lookup_outcomes(tokens, len(ids) - 1, len(all_ranks[-1]), lookup_ranges, lookup_max_tokens)
            for r, (d, ok) in enumerate(outcomes):
                drafted[r] += d
                right[r] += ok
            if progress:
                progress(i + 1, len(prompts))
    ranks = torch.cat(all_ranks) if all_ranks else torch.empty(0, medusa.num_heads, dtype=torch.long)
    if ranks.shape[0] == 0:
        raise ValueError("calibration produced no positions: the continuations were too short")
    lookups = tuple(LookupOutcomes(low, high, lookup_max_tokens, d, ok)
                    for (low, high), d, ok in zip(lookup_ranges, drafted, right))
    return accuracy_from_ranks(ranks.clamp(max=top_k).numpy(), top_k, model=medusa.base.model_id,
                               heads=medusa.heads_name, segments=tuple(len(r) for r in all_ranks), lookups=lookups)
