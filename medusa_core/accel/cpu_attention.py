"""Scaled dot-product attention for grouped-query models on the CPU without copying the cache.

transformers' "sdpa" attention lets the kernel handle grouped-query attention (several query
heads per key/value head) only when there is no mask; with one, as in every tree verification
pass and every multi-token pass over a cache, it first repeats keys and values per query head,
copying the whole cache in every layer (SmolLM2-135M, 9 query / 3 key-value heads: 0.3 ms a layer
at a 300-token context, 9 ms a step). PyTorch's CPU kernel takes a mask with `enable_gqa=True`, so
`use_gqa_sdpa` switches a CPU model to this attention, registered with transformers under
GQA_SDPA. It computes the same function (tests/test_cpu_attention.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

GQA_SDPA = "sdpa_gqa"


def gqa_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [B, H, T, d]
    key: torch.Tensor,  # [B, H_kv, S, d]
    value: torch.Tensor,  # [B, H_kv, S, d]
    attention_mask: torch.Tensor | None,  # [B, 1, T, S]
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function interface; returns [B, T, H, d]. Only a plain masked
    pass is ours; anything else (no mask, position biases, soft-capping) is transformers' sdpa,
    which shares key/value heads itself when there is no mask."""
    if attention_mask is None or kwargs.get("position_bias") is not None or kwargs.get("softcap") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True
    )  # [B, H, T, d]
    return out.transpose(1, 2).contiguous(), None


def use_gqa_sdpa(model: PreTrainedModel) -> PreTrainedModel:
    """Switch a model that runs transformers' "sdpa" attention to GQA_SDPA; returns `model`."""
    if model.config._attn_implementation != "sdpa":
        return model
    AttentionInterface.register(GQA_SDPA, gqa_sdpa_attention)
    AttentionMaskInterface.register(GQA_SDPA, sdpa_mask)
    model.set_attn_implementation(GQA_SDPA)
    return model
