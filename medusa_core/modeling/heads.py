"""Medusa heads: per head a stack of ResBlocks, then a vocabulary projection.

Head k (0-based) reads the base model's last hidden state h_t and predicts the token at t+k+2.
The projection is each head's own Linear(d, V) (FasterDecoding's Medusa-1 layout), each head's own
Linear(d, U) onto a proposal vocabulary of U tokens (proposal_vocab.json beside the weights), or
the base model's lm_head, shared by all heads (the most compact layout).

Optionally (`root_token`, not in Medusa-1 nor FasterDecoding's format) every head also reads the
pending root, the token t+1 the base model itself chose at h_t, which decoding knows before the
heads draft: x_0 = h_t + A_k e(t+1), with e the base model's input embedding. Medusa's head 0 must
guess t+2 without knowing t+1; Hydra's and EAGLE's drafters read it. A_k starts at zero, so heads
gain the input without changing a logit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class HeadsConfig:
    num_heads: int
    num_layers: int
    hidden_size: int
    vocab_size: int
    shared_lm_head: bool = True
    base_model_name_or_path: str = ""
    proposal_size: int = 0  # own projections' rows: 0 = the whole vocabulary, else a proposal vocabulary's size
    root_token: bool = False  # each head also reads the pending root token's embedding

    def __post_init__(self) -> None:
        for name in ("num_heads", "hidden_size", "vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"heads config: {name} must be >= 1, got {getattr(self, name)}")
        if self.num_layers < 0:
            raise ValueError(f"heads config: num_layers must be >= 0, got {self.num_layers}")
        if self.proposal_size < 0 or (self.proposal_size and self.shared_lm_head):
            raise ValueError(f"heads config: proposal_size {self.proposal_size} needs own projections and must be >= 0")

    @property
    def projection_rows(self) -> int:
        return self.proposal_size or self.vocab_size

    def to_json(self) -> dict:
        """FasterDecoding's keys first (so their tools read our folders), then our own."""
        return {
            "medusa_num_heads": self.num_heads,
            "medusa_num_layers": self.num_layers,
            "base_model_name_or_path": self.base_model_name_or_path,
            "hidden_size": self.hidden_size,
            "vocab_size": self.vocab_size,
            "medusa_shared_lm_head": self.shared_lm_head,
        } | {"medusa_explorer": asdict(self)}


class ResBlock(nn.Module):
    """x + SiLU(W x + b); W and b start at zero so a new head is exactly the identity on h_t."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, hidden_size)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + nn.functional.silu(self.linear(x))


class MedusaHeads(nn.Module):
    def __init__(self, config: HeadsConfig) -> None:
        super().__init__()
        self.config = config
        self.blocks = nn.ModuleList(
            nn.ModuleList(ResBlock(config.hidden_size) for _ in range(config.num_layers))
            for _ in range(config.num_heads)
        )
        # Own projections are stored stacked so all heads project in one batched matmul.
        self.proj = (
            None
            if config.shared_lm_head
            else nn.Parameter(torch.empty(config.num_heads, config.projection_rows, config.hidden_size))
        )
        if self.proj is not None:
            nn.init.normal_(self.proj, std=config.hidden_size**-0.5)
        # A_k [K, d, d] maps the root's embedding into head k's input; zero: the root changes nothing yet.
        d = config.hidden_size
        self.root_proj = nn.Parameter(torch.zeros(config.num_heads, d, d)) if config.root_token else None

    def head_inputs(self, hidden: torch.Tensor, num_heads: int | None, root_embeds: torch.Tensor | None) -> list:
        """Each head's first input [..., d]: h_t, plus A_k e(root) for heads that read the root."""
        n = len(self.blocks[:num_heads])
        if self.root_proj is None:
            return [hidden] * n
        if root_embeds is None:
            raise ValueError("these heads read the pending root token: pass its embedding")
        return [hidden + root_embeds @ a.T for a in self.root_proj[:n]]

    def head_states(
        self, hidden: torch.Tensor, num_heads: int | None = None, root_embeds: torch.Tensor | None = None
    ) -> torch.Tensor:
        """hidden [..., d] (and the roots' embeddings [..., d] for heads that read them) -> the first
        `num_heads` (default all) heads' projection inputs [K, ..., d]."""
        outs = []
        for blocks, x in zip(self.blocks[:num_heads], self.head_inputs(hidden, num_heads, root_embeds)):
            for block in blocks:
                x = block(x)
            outs.append(x)
        return torch.stack(outs)

    def forward(
        self, hidden: torch.Tensor, lm_head: nn.Module | None = None, num_heads: int | None = None,
        root_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """hidden [..., d] -> logits [K, ..., V] of the first `num_heads` heads (default all), or [K, ..., U]
        over the proposal vocabulary for heads with proposal_size U; lm_head is the base model's, for shared heads;
        root_embeds [..., d] the pending roots' embeddings, for heads that read them."""
        z = self.head_states(hidden, num_heads, root_embeds)  # [K, ..., d]
        if self.proj is None:
            if lm_head is None:
                raise ValueError("these heads share the base model's lm_head: pass it")
            return lm_head(z)  # one matmul over all heads: [K, ..., V]
        flat = z.reshape(z.shape[0], -1, z.shape[-1])  # [K, N, d]
        logits = torch.bmm(flat, self.proj[: z.shape[0]].transpose(1, 2))  # [K, N, rows]
        return logits.reshape(*z.shape[:-1], -1)
