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

from .cpu_matmul import use_few_rows_linears

@dataclass(frozen=True)
class ProposalVocab:
    tokens: torch.Tensor  # [U] sorted distinct token ids
    projection: nn.Linear  # d -> U: the base lm_head's rows for `tokens`, frozen

    @classmethod
    def from_lm_head(cls, tokens: torch.Tensor, lm_head: nn.Module) -> "ProposalVocab":
        weight = lm_head.weight.detach()
        rows = tokens.to(weight.device)
        projection = nn.Linear(weight.shape[1], rows.shape[0], bias=lm_head.bias is not None, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            projection.weight.copy_(weight[rows])
            if lm_head.bias is not None:
                projection.bias.copy_(lm_head.bias.detach()[rows])
        return cls(rows, use_few_rows_linears(projection.requires_grad_(False)))

    @property
    def size(self) -> int:
        return int(self.tokens.shape[0])

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """Heads' states [K, ..., d] -> logits over the proposal vocabulary [K, ..., U]."""
        return self.projection(states)

    def positions(self, token_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """Token ids -> their index in `tokens`, -1 for tokens the heads never propose."""
        index_of = torch.full((vocab_size,), -1, dtype=torch.long, device=self.tokens.device)
        index_of[self.tokens] = torch.arange(self.size, device=self.tokens.device)
        return index_of[token_ids]
