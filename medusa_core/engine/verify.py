"""Forward passes on the model's own cache (prompts, candidate trees; one row or a batch) and the
KV commit.

The cache keeps every position in every layer, sliding-window layers included: a tree pass needs
the entries its window reaches back to, and the commit moves accepted entries by absolute
position. Windows and batch padding are applied by the masks instead (`engine.masks`).

Batched rows share one physical cache; row b's entries are packed at the front of it (its first
len_b positions), so a row's logical positions are its physical ones and the rest is padding.
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import DynamicCache, PreTrainedModel

from medusa_core.engine.buffers import TreeBuffers
from medusa_core.engine.masks import prompt_mask, tree_mask


def new_cache() -> DynamicCache:
    """A cache of plain full layers (no config: no sliding layers that forget their past)."""
    return DynamicCache()


def forward_rows(
    model: PreTrainedModel,
    input_ids: torch.Tensor,  # [B, T]
    cache: DynamicCache,
    position_ids: torch.Tensor,  # [B, T]
    attention_mask: torch.Tensor | dict | None = None,
) -> torch.Tensor:
    """Last hidden states [B, T, d] (after the final norm, i.e. the lm_head's input)."""
    out = model.base_model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache, use_cache=True
    )
    return out.last_hidden_state


def forward_hidden(
    model: PreTrainedModel,
    input_ids: torch.Tensor,  # [1, T]
    cache: DynamicCache,
    position_ids: torch.Tensor,  # [1, T]
    attention_mask: torch.Tensor | dict | None = None,
) -> torch.Tensor:
    """One row's last hidden states [T, d]."""
    return forward_rows(model, input_ids, cache, position_ids, attention_mask)[0]


def prefill_rows(model: PreTrainedModel, prompts: Sequence[Sequence[int]]) -> tuple[DynamicCache, torch.Tensor]:
    """Run prompts of any lengths through the model, right-padded into one batch; returns the
    cache and each row's last hidden state [B, d]."""
    device = model.device
    lengths = torch.tensor([len(p) for p in prompts], device=device)  # [B]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([list(p) + [p[-1]] * (width - len(p)) for p in prompts], device=device)  # [B, T]
    uneven = any(len(p) != width for p in prompts)
    # Rows of one length need no mask: transformers builds the causal (windowed) one itself.
    mask = prompt_mask(model, lengths, width) if uneven else None
    positions = torch.arange(width, device=device)[None].expand(len(prompts), width)  # [B, T]
    cache = new_cache()
    hidden = forward_rows(model, ids, cache, positions, mask)  # [B, T, d]
    return cache, hidden[torch.arange(len(prompts), device=device), lengths - 1]


def prefill(model: PreTrainedModel, prompt_ids: torch.Tensor) -> tuple[DynamicCache, torch.Tensor]:
    """Run the prompt [P] through the model; returns the cache and the last hidden state [d]."""
    cache, hidden = prefill_rows(model, [prompt_ids.tolist()])
    return cache, hidden[0]


def verify_rows(
    model: PreTrainedModel,
    cache: DynamicCache,
    node_tokens: torch.Tensor,  # [B, N]
    depth: torch.Tensor,  # [B, N]
    ancestors: torch.Tensor,  # [B, N, N] bool
    lengths: Sequence[int],  # [B] each row's entries in the cache
) -> torch.Tensor:
    """Hidden states [B, N, d] of every row's tree nodes from one forward pass with tree attention."""
    cache_len = cache.get_seq_length()
    lengths_t = torch.tensor(list(lengths), device=node_tokens.device)  # [B]
    # A lone root on unpadded rows is a plain decoding step: transformers builds its (windowed) mask.
    plain = node_tokens.shape[1] == 1 and all(n == cache_len for n in lengths)
    mask = None if plain else tree_mask(model, ancestors, depth, lengths_t, cache_len)
    return forward_rows(model, node_tokens, cache, lengths_t[:, None] + depth, mask)


def verify_tree(
    model: PreTrainedModel,
    cache: DynamicCache,
    node_tokens: torch.Tensor,  # [N]
    buffers: TreeBuffers,
    prefix_len: int,
) -> torch.Tensor:
    """Hidden states [N, d] of one row's tree nodes (its cache holds exactly its prefix)."""
    return verify_rows(
        model, cache, node_tokens[None], buffers.depth[None], buffers.ancestor_mask[None], [prefix_len]
    )[0]


def commit_rows(cache: DynamicCache, lengths: Sequence[int], accepted: Sequence[Sequence[int]]) -> list[int]:
    """Per row, move the accepted nodes' entries to right after that row's own entries; returns the
    new lengths. The tree sat after the longest row; rows that accepted fewer nodes (or started
    shorter) keep padding after theirs, masked from then on, and the cache is cut to the longest.
    A row of the longest length whose path is nodes 0, 1, 2, ... (the root alone, or a chain
    accepted from its start) is in place already; when every row is, nothing moves."""
    tree_start = max(lengths)  # the cache's length before the pass: every commit cuts it to the longest row
    new_lengths = [n + len(a) for n, a in zip(lengths, accepted)]
    if any(n != tree_start or list(a) != list(range(len(a))) for n, a in zip(lengths, accepted)):
        width = max(len(a) for a in accepted)
        # Short paths repeat their last entry; those copies land past the row's new length (padding).
        src = [[tree_start + a[min(i, len(a) - 1)] for i in range(width)] for a in accepted]  # [B, A]
        dst = [[n + i for i in range(width)] for n in lengths]  # [B, A]
        device = cache.layers[0].keys.device
        rows = torch.arange(len(lengths), device=device)[:, None]  # [B, 1]
        src_t, dst_t = torch.tensor(src, device=device), torch.tensor(dst, device=device)
        for layer in cache.layers:
            # layers may sit on several devices (device_map): a no-op move for the usual one
            rows, src_t, dst_t = (t.to(layer.keys.device) for t in (rows, src_t, dst_t))
            # Gather everything first, then write: a row's sources and destinations may overlap.
            layer.keys[rows, :, dst_t] = layer.keys[rows, :, src_t]  # [B, A, kv_heads, d_head]
            layer.values[rows, :, dst_t] = layer.values[rows, :, src_t]
    cache.crop(max(new_lengths) - cache.get_seq_length())  # a negative count: entries to drop
    return new_lengths


def drop_rows(cache: DynamicCache, keep: Sequence[int], lengths: Sequence[int]) -> None:
    """Keep only these rows of the batch (of `lengths` entries each), so finished rows cost nothing
    from then on; the cache is cut to the longest row kept."""
    cache.batch_select_indices(torch.tensor(list(keep), device=cache.layers[0].keys.device))
    cache.crop(max(lengths) - cache.get_seq_length())
