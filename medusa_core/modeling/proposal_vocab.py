"""The tokens shared-lm_head heads may propose, and their slice of the base model's lm_head.

Heads only propose; the base model verifies every token, so restricting proposals to the
tokens the heads were trained on (the vocabulary of the self-distilled answers) keeps decoding
lossless. It makes the heads' projection several times cheaper (SmolLM2's answers use about a
fifth of its 49k tokens), which is a visible part of a CPU decoding step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from medusa_core.accel.cpu_matmul import use_few_rows_linears

def lm_head_rows(lm_head: nn.Module, tokens: torch.Tensor | None, dtype: torch.dtype) -> nn.Linear:
    """A frozen copy of the lm_head in `dtype`, cut to the rows of `tokens` when given."""
    weight = lm_head.weight.detach()
    bias = lm_head.bias.detach() if lm_head.bias is not None else None
    if tokens is not None:
        rows = tokens.to(weight.device)
        weight, bias = weight[rows], (bias[rows] if bias is not None else None)
    projection = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=dtype)
    with torch.no_grad():
        projection.weight.copy_(weight)
        if bias is not None:
            projection.bias.copy_(bias)
    return projection.requires_grad_(False)


def positions_in(tokens: torch.Tensor, token_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Token ids (all >= 0) -> their index in the sorted `tokens`, -1 for ids not among them."""
    index_of = torch.full((vocab_size,), -1, dtype=torch.long, device=tokens.device)
    index_of[tokens] = torch.arange(tokens.shape[0], device=tokens.device)
    return index_of[token_ids.to(tokens.device)]


@dataclass(frozen=True)
class ProposalVocab:
    tokens: torch.Tensor  # [U] sorted distinct token ids
    # d -> U: the base lm_head's rows for `tokens`, frozen; None for heads with their own projections onto them
    projection: nn.Linear | None

    @classmethod
    def from_lm_head(cls, tokens: torch.Tensor, lm_head: nn.Module) -> "ProposalVocab":
        projection = lm_head_rows(lm_head, tokens, lm_head.weight.dtype)
        return cls(tokens.to(lm_head.weight.device), use_few_rows_linears(projection))

    @classmethod
    def for_own_projections(cls, tokens: torch.Tensor, device: torch.device) -> "ProposalVocab":
        return cls(tokens.to(device), None)

    @property
    def size(self) -> int:
        return int(self.tokens.shape[0])

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """Heads' states [K, ..., d] -> logits over the proposal vocabulary [K, ..., U]."""
        if self.projection is None:
            raise ValueError("these heads project onto the proposal vocabulary themselves: call the heads")
        return self.projection(states)

    def positions(self, token_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """Token ids -> their index in `tokens`, -1 for tokens the heads never propose."""
        return positions_in(self.tokens, token_ids, vocab_size)
