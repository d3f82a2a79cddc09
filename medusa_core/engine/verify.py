"""One forward pass over a flat candidate tree on the model's own cache, and the KV commit."""

from __future__ import annotations

import torch
from transformers import DynamicCache, PreTrainedModel

from medusa_core.engine.buffers import TreeBuffers


def tree_attention_mask(buffers: TreeBuffers, prefix_len: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive 4D mask [1, 1, N, prefix + N]: every node sees the prefix and its own ancestors."""
    n = buffers.num_nodes
    visible = torch.ones(n, prefix_len + n, dtype=torch.bool, device=buffers.depth.device)
    visible[:, prefix_len:] = buffers.ancestor_mask
    mask = torch.zeros(n, prefix_len + n, dtype=dtype, device=visible.device)
    mask.masked_fill_(~visible, torch.finfo(dtype).min)
    return mask[None, None]


def forward_hidden(
    model: PreTrainedModel,
    input_ids: torch.Tensor,  # [1, T]
    cache: DynamicCache,
    position_ids: torch.Tensor,  # [1, T]
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Last hidden states [T, d] (after the final norm, i.e. the lm_head's input)."""
    out = model.base_model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        cache=cache,
        use_cache=True,
    )
    return out.last_hidden_state[0]


def prefill(model: PreTrainedModel, prompt_ids: torch.Tensor) -> tuple[DynamicCache, torch.Tensor]:
    """Run the prompt [P] through the model; returns the cache and the last hidden state [d]."""
    cache = DynamicCache(config=model.config)
    positions = torch.arange(prompt_ids.shape[0], device=prompt_ids.device)[None]
    hidden = forward_hidden(model, prompt_ids[None], cache, positions)
    return cache, hidden[-1]


def verify_tree(
    model: PreTrainedModel,
    cache: DynamicCache,
    node_tokens: torch.Tensor,  # [N]
    buffers: TreeBuffers,
    prefix_len: int,
) -> torch.Tensor:
    """Hidden states [N, d] of every tree node from one forward pass with tree attention."""
    # A lone root sees the whole cache: no mask lets attention take its unmasked kernel.
    mask = tree_attention_mask(buffers, prefix_len, model.dtype) if buffers.num_nodes > 1 else None
    positions = (buffers.depth + prefix_len)[None]  # [1, N]
    return forward_hidden(model, node_tokens[None], cache, positions, mask)


def commit_kv(cache: DynamicCache, prefix_len: int, accepted: torch.Tensor) -> None:
    """Keep only the accepted nodes' KV entries, packed right after the prefix.

    Accepted node ids increase along a path, so copying them down in order never overwrites an
    entry that is still to be read. A path of nodes 0, 1, 2, ... (the root alone, or a chain
    accepted from its start) is in place already.
    """
    keep = accepted.to(torch.long) + prefix_len  # [A]
    new_len = prefix_len + keep.shape[0]
    if accepted.tolist() != list(range(len(accepted))):
        for layer in cache.layers:
            layer.keys[:, :, prefix_len:new_len] = layer.keys[:, :, keep]  # [B, kv_heads, A, d_head]
            layer.values[:, :, prefix_len:new_len] = layer.values[:, :, keep]
    cache.crop(new_len - cache.get_seq_length())
