"""One forward pass over a flat candidate tree on the model's own cache, and the KV commit.

The cache keeps every position in every layer, sliding-window layers included: a tree pass needs
the entries its window reaches back to, and the commit moves accepted entries by absolute
position. The window is applied by the mask instead, by logical position (prefix length + node
depth), exactly as sequential decoding would see it.
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import DynamicCache, PreTrainedModel

from medusa_core.engine.buffers import TreeBuffers

FULL, SLIDING = "full_attention", "sliding_attention"


def new_cache() -> DynamicCache:
    """A cache of plain full layers (no config: no sliding layers that forget their past)."""
    return DynamicCache()


def sliding_window(model: PreTrainedModel) -> int | None:
    """The model's attention window, when any layer uses one."""
    cfg = model.config
    window = getattr(cfg, "sliding_window", None)
    layer_types = getattr(cfg, "layer_types", None)
    if not window or (layer_types is not None and SLIDING not in layer_types):
        return None
    return int(window)


def tree_visibility(buffers: TreeBuffers, prefix_len: int, window: int | None) -> torch.Tensor:
    """[N, prefix + N] bool: each node sees the prefix and its own ancestors (within `window`)."""
    n = buffers.num_nodes
    device = buffers.depth.device
    visible = torch.ones(n, prefix_len + n, dtype=torch.bool, device=device)
    visible[:, prefix_len:] = buffers.ancestor_mask
    if window is not None:
        query_pos = (buffers.depth + prefix_len)[:, None]  # [N, 1]
        key_pos = torch.cat([torch.arange(prefix_len, device=device), buffers.depth + prefix_len])[None]  # [1, P+N]
        visible &= key_pos > query_pos - window  # transformers' rule: kv > q - window
    return visible


def additive(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    mask = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
    return mask.masked_fill_(~visible, torch.finfo(dtype).min)[None, None]  # [1, 1, N, P+N]


def tree_attention_mask(model: PreTrainedModel, buffers: TreeBuffers, prefix_len: int) -> torch.Tensor | dict:
    """The 4D additive mask [1, 1, N, prefix + N], or one per layer type for models that mix full
    and sliding-window layers (they take a {layer type: mask} mapping)."""
    full = additive(tree_visibility(buffers, prefix_len, None), model.dtype)
    window = sliding_window(model)
    if window is None:
        return full
    sliding = additive(tree_visibility(buffers, prefix_len, window), model.dtype)
    if getattr(model.config, "layer_types", None) is None:
        return sliding  # every layer slides (Mistral, Phi-3)
    return {FULL: full, SLIDING: sliding}


def forward_hidden(
    model: PreTrainedModel,
    input_ids: torch.Tensor,  # [1, T]
    cache: DynamicCache,
    position_ids: torch.Tensor,  # [1, T]
    attention_mask: torch.Tensor | dict | None = None,
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
    cache = new_cache()
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
    # A lone root is a plain decoding step: transformers builds its (windowed) mask itself.
    mask = tree_attention_mask(model, buffers, prefix_len) if buffers.num_nodes > 1 else None
    positions = (buffers.depth + prefix_len)[None]  # [1, N]
    return forward_hidden(model, node_tokens[None], cache, positions, mask)


def commit_kv(cache: DynamicCache, prefix_len: int, accepted: Sequence[int]) -> None:
    """Keep only the accepted nodes' KV entries, packed right after the prefix.

    Accepted node ids increase along a path, so copying them down in order never overwrites an
    entry that is still to be read. A path of nodes 0, 1, 2, ... (the root alone, or a chain
    accepted from its start) is in place already.
    """
    new_len = prefix_len + len(accepted)
    if list(accepted) != list(range(len(accepted))):
        keep = torch.tensor(accepted, device=cache.layers[0].keys.device) + prefix_len  # [A]
        for layer in cache.layers:
            keep = keep.to(layer.keys.device)  # layers may sit on several devices (device_map)
            layer.keys[:, :, prefix_len:new_len] = layer.keys[:, :, keep]  # [B, kv_heads, A, d_head]
            layer.values[:, :, prefix_len:new_len] = layer.values[:, :, keep]
    cache.crop(new_len - cache.get_seq_length())  # a negative count: entries to drop
