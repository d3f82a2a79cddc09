"""Exact sampling on a tree of deterministic drafts, and the logits processing it shares with plain sampling.

At the root, and then at each node the walk reaches, draw one token y from the model's processed
distribution p there. If y is the token of one of the node's children, move to that child and
draw again; otherwise y is the next token and the walk stops. At a leaf, the next token is drawn
from p at the leaf. Sibling tokens are distinct (drafts are merged before verification), so each
draw picks at most one child, and every emitted token is a draw from p at its own position: the
output has exactly the distribution of token-by-token sampling. Only the random stream differs.

The draws are made for every node at once (one independent draw per node; the walk uses those it
visits), after the tree is built, so the random numbers never influence which tree is verified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from medusa_core.engine.buffers import TreeBuffers


@dataclass(frozen=True)
class SamplingConfig:
    """The model's distribution as plain sampling processes it: temperature, then top-k, then top-p."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"sampling needs temperature > 0, got {self.temperature} (0 is greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top-k must be >= 1 (or 0 for none), got {self.top_k}")


def processed_probs(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """logits [..., V] -> the distribution plain sampling draws from [..., V] (fp32)."""
    scores = logits.float() / config.temperature
    if config.top_k:
        kth = torch.topk(scores, min(config.top_k, scores.shape[-1]), dim=-1).values[..., -1:]  # [..., 1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if config.top_p < 1:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass strictly above each token
        keep_sorted = before < config.top_p  # the smallest set whose mass reaches top_p
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        probs = torch.where(keep, probs, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def draw(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row of probs [R, V] -> [R] (on the CPU, where the seeded generator lives)."""
    return torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0]


@dataclass(frozen=True)
class Walk:
    accepted: list[int]  # node ids root -> last accepted node
    next_token: int  # drawn at the last accepted node: the next step's root
    next_prob: float  # its probability under p there
    drawn: list[int]  # the token drawn at each visited node, in order (for traces)


def walk_tree(node_tokens: Sequence[int], parents: Sequence[int], draw_at: Callable[[int], tuple[int, float]]) -> Walk:
    """Follow the draws from the root: move to the child whose token was drawn, else stop.
    draw_at(node) -> (token, its probability) is the draw at a node, made once."""
    children: dict[int, dict[int, int]] = {}
    for node, parent in enumerate(parents[1:], start=1):
        children.setdefault(parent, {})[node_tokens[node]] = node
    node, accepted, drawn = 0, [0], []
    while True:
        y, prob = draw_at(node)
        drawn.append(y)
        child = children.get(node, {}).get(y)
        if child is None:
            return Walk(accepted, y, prob, drawn)
        node = child
        accepted.append(node)


def accept_exact(
    node_tokens: Sequence[int],
    buffers: TreeBuffers,
    internal_logits: torch.Tensor,  # [I, V]
    leaf_logits: Callable[[int], torch.Tensor],  # node -> its logits [V], for a leaf the walk reaches
    config: SamplingConfig,
    generator: torch.Generator,
) -> Walk:
    """The walk over one verified tree, with one draw per node that has logits, made at once."""
    probs = processed_probs(internal_logits, config).cpu()  # [I, V]
    tokens = draw(probs, generator).tolist()  # [I]

    def draw_at(node: int) -> tuple[int, float]:
        row = buffers.internal_row[node]
        if row >= 0:
            return tokens[row], float(probs[row, tokens[row]])
        p = processed_probs(leaf_logits(node)[None], config).cpu()  # [1, V]
        y = int(draw(p, generator)[0])
        return y, float(p[0, y])

    return walk_tree(node_tokens, buffers.parents, draw_at)
