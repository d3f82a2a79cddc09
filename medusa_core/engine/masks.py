"""Attention masks by logical position: prompt causality, tree ancestry, batch padding, windows.

Batched rows share one physical cache of length S; row b's own entries are the first len_b of
it, the rest is padding its queries must not see. Sliding windows are applied by logical position
(a row's entries are packed, so entry j has position j; a tree node sits at len_b + its depth),
exactly as sequential decoding of that row alone would see them.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

FULL, SLIDING = "full_attention", "sliding_attention"


def sliding_window(model: PreTrainedModel) -> int | None:
    """The model's attention window, when any layer uses one."""
    cfg = model.config
    window = getattr(cfg, "sliding_window", None)
    layer_types = getattr(cfg, "layer_types", None)
    if not window or (layer_types is not None and SLIDING not in layer_types):
        return None
    return int(window)


def additive(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """visible [B, T, S] bool -> additive mask [B, 1, T, S]."""
    mask = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
    return mask.masked_fill_(~visible, torch.finfo(dtype).min)[:, None]


def attention_mask(
    model: PreTrainedModel,
    visible: torch.Tensor,  # [B, T, S] bool: which keys each query may see, windows aside
    query_pos: torch.Tensor,  # [B, T] logical positions
    key_pos: torch.Tensor,  # [B, S]
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The 4D additive mask, or one per layer type for models that mix full and sliding-window
    layers (they take a {layer type: mask} mapping)."""
    full = additive(visible, model.dtype)
    window = sliding_window(model)
    if window is None:
        return full
    in_window = key_pos[:, None, :] > query_pos[:, :, None] - window  # transformers' rule: kv > q - window
    sliding = additive(visible & in_window, model.dtype)
    if getattr(model.config, "layer_types", None) is None:
        return sliding  # every layer slides (Mistral, Phi-3)
    return {FULL: full, SLIDING: sliding}


def prompt_mask(model: PreTrainedModel, lengths: torch.Tensor, width: int) -> torch.Tensor | dict:
    """Right-padded prompts of `lengths` [B] in a [B, width] batch: causal within each row's own
    tokens (a padding query sees its row's prompt, so no row of the mask is empty)."""
    pos = torch.arange(width, device=lengths.device)  # [T]
    visible = (pos[None, None, :] <= pos[None, :, None]) & (pos[None, None, :] < lengths[:, None, None])
    pos_b = pos[None].expand(lengths.shape[0], width)
    return attention_mask(model, visible, pos_b, pos_b)


def tree_mask(
    model: PreTrainedModel,
    ancestors: torch.Tensor,  # [B, N, N] bool: [b, i, j] = node j is i or an ancestor of i
    depth: torch.Tensor,  # [B, N]
    lengths: torch.Tensor,  # [B] each row's entries in the cache
    cache_len: int,  # S0: the cache's physical length
) -> torch.Tensor | dict:
    """Each node sees its row's cache entries and its own ancestors: mask [B, 1, N, S0 + N]."""
    rows, n = depth.shape
    cache_pos = torch.arange(cache_len, device=depth.device)[None].expand(rows, cache_len)  # [B, S0]
    node_pos = lengths[:, None] + depth  # [B, N]
    in_row = (cache_pos < lengths[:, None])[:, None, :].expand(rows, n, cache_len)  # [B, N, S0]
    visible = torch.cat([in_row, ancestors], dim=-1)  # [B, N, S0 + N]
    return attention_mask(model, visible, node_pos, torch.cat([cache_pos, node_pos], dim=-1))
