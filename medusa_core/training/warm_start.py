"""Where head training starts: fresh heads, or heads trained before (continued training).

Continued training keeps what the earlier heads learned and may grow them on the way: ResBlocks
added after theirs start as the identity, own projections (Medusa-1's per-head lm_head) start
as the lm_head's rows, and a new root-token input starts at zero, so the grown heads begin exactly where the earlier heads were. The earlier
heads' proposal vocabulary is kept, so their projections and ranks keep their meaning.
"""

from __future__ import annotations

import torch
from torch import nn

from medusa_core.modeling.heads import HeadsConfig, MedusaHeads
from medusa_core.modeling.heads_io import load_heads, load_proposal_tokens
from medusa_core.modeling.models import BaseModel


def start_projections_at(heads: MedusaHeads, lm_head: nn.Linear) -> None:
    """Every head's own projection [U, d] starts as the lm_head's rows, so a new head (identity
    ResBlocks) predicts what the base model's next-token distribution would: Medusa-1's start."""
    with torch.no_grad():
        heads.proj.copy_(lm_head.weight[None].expand_as(heads.proj))


def earlier_vocabulary(init_heads: str, vocab_size: int, wanted_size: int | None) -> torch.Tensor | None:
    """The earlier heads' proposal tokens (None when they propose from the whole vocabulary)."""
    tokens = load_proposal_tokens(init_heads, vocab_size)
    if tokens is not None and wanted_size is not None and wanted_size != tokens.shape[0]:
        raise ValueError(
            f"heads {init_heads} propose {tokens.shape[0]} tokens: continued training keeps them "
            f"(leave out proposal_vocab_size, or give {tokens.shape[0]})"
        )
    return tokens


def grown_from(earlier: MedusaHeads, config: HeadsConfig, lm_head: nn.Linear) -> MedusaHeads:
    """Heads of `config` holding `earlier`'s weights; what `earlier` lacks starts where it changes nothing."""
    old = earlier.config
    if old.num_heads != config.num_heads:
        raise ValueError(
            f"the earlier heads are {old.num_heads}, this training has {config.num_heads}: they must match"
        )
    if old.num_layers > config.num_layers:
        raise ValueError(f"the earlier heads have {old.num_layers} ResBlocks: train with at least as many")
    if old.root_token and not config.root_token:
        raise ValueError("the earlier heads read the pending root token: continue with root_token")
    if not old.shared_lm_head and config.shared_lm_head:
        raise ValueError("the earlier heads have their own projections: continue with own_projection")
    if not old.shared_lm_head and old.projection_rows != config.projection_rows:
        raise ValueError(f"the earlier heads project onto {old.projection_rows} tokens, this training onto "
                         f"{config.projection_rows}")
    heads = MedusaHeads(config)
    with torch.no_grad():
        for new_blocks, old_blocks in zip(heads.blocks, earlier.blocks):
            for new, old_block in zip(new_blocks, old_blocks):
                new.load_state_dict(old_block.state_dict())
        if heads.proj is not None:
            if earlier.proj is not None:
                heads.proj.copy_(earlier.proj)
            else:
                start_projections_at(heads, lm_head)
        if earlier.root_proj is not None:
            heads.root_proj.copy_(earlier.root_proj)  # else it stays zero: the root changes nothing yet
    return heads


def initial_heads(base: BaseModel, config: HeadsConfig, lm_head: nn.Linear, init_heads: str | None) -> MedusaHeads:
    """Fresh heads (ResBlocks at the identity), or the heads in `init_heads` grown to `config`.
    `lm_head` [U, d] is the frozen lm_head cut to the vocabulary the heads are trained on."""
    if init_heads:
        heads = grown_from(load_heads(init_heads, base.hidden_size, base.vocab_size).float(), config, lm_head)
    else:
        heads = MedusaHeads(config)
        if heads.proj is not None:
            start_projections_at(heads, lm_head)
    return heads.to(base.device).train()
