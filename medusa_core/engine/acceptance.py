"""Choosing the accepted path through a verified tree: lossless greedy and typical acceptance."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medusa_core.engine.buffers import TreeBuffers


@dataclass(frozen=True)
class TypicalConfig:
    """Medusa's typical acceptance: accept x if p(x) > min(epsilon, delta * exp(-H(p)))."""

    temperature: float = 0.7
    posterior_threshold: float = 0.09  # epsilon
    posterior_alpha: float = 0.3  # delta

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"typical acceptance needs temperature > 0, got {self.temperature}")
        if not 0 < self.posterior_threshold <= 1:
            raise ValueError(f"posterior threshold must be in (0, 1], got {self.posterior_threshold}")
        if not 0 < self.posterior_alpha <= 1:
            raise ValueError(f"posterior alpha must be in (0, 1], got {self.posterior_alpha}")


def longest_accepted_path(
    node_ok: torch.Tensor, buffers: TreeBuffers, node_score: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """node_ok [N] bool (root ignored) -> the longest root path of accepted nodes, on the device
    (no host round trip): its node ids [D+1] padded with -1, and its node count [] (root included).
    Ties go to the first path, or with node_score [N] to the highest sum over the accepted nodes."""
    rows = buffers.retrieve  # [L, D+1]
    nodes = rows[:, 1:].clamp(min=0)  # [L, D]
    ok = torch.where(rows[:, 1:] >= 0, node_ok[nodes], False)  # [L, D]
    lengths = ok.to(torch.long).cumprod(dim=1).sum(dim=1)  # [L]
    if node_score is None:
        best = torch.argmax(lengths)  # the first of the longest
    else:
        within = torch.arange(nodes.shape[1], device=rows.device)[None] < lengths[:, None]  # [L, D]
        score = torch.where(within, node_score[nodes], 0.0).sum(dim=1)  # [L]
        best = torch.argmax(torch.where(lengths == lengths.max(), score, float("-inf")))
    return rows[best], lengths[best] + 1


def accept_greedy(
    node_tokens: torch.Tensor, internal_logits: torch.Tensor, buffers: TreeBuffers
) -> tuple[torch.Tensor, torch.Tensor]:
    """A node is right when it is its parent's argmax; siblings differ, so this is exact greedy.
    internal_logits [I, V] are the logits of the nodes that have children (buffers.internal)."""
    predicted = internal_logits.argmax(dim=-1)  # [I]
    return longest_accepted_path(node_tokens == predicted[buffers.parent_row], buffers)


def typical_threshold(probs: torch.Tensor, config: TypicalConfig) -> torch.Tensor:
    """probs [N, V] -> per-node acceptance threshold [N]."""
    entropy = -(probs * torch.log(probs.clamp(min=1e-10))).sum(dim=-1)
    return torch.minimum(
        torch.full_like(entropy, config.posterior_threshold), config.posterior_alpha * torch.exp(-entropy)
    )


def tempered_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(logits.float() / temperature, dim=-1)


def accept_typical(
    node_tokens: torch.Tensor, internal_logits: torch.Tensor, buffers: TreeBuffers, config: TypicalConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Medusa's typical acceptance: a node is accepted when its parent's tempered probability of it
    clears the threshold; of the longest accepted candidates, the most likely one (the highest sum
    of log-probabilities along its accepted nodes) wins, as in Medusa's evaluate_posterior."""
    probs = tempered_probs(internal_logits, config.temperature)  # [I, V]
    threshold = typical_threshold(probs, config)  # [I]
    p_token = probs[buffers.parent_row, node_tokens]  # [N] parent's probability of each node's token
    log_p = torch.log(p_token.clamp(min=1e-30))
    return longest_accepted_path(p_token > threshold[buffers.parent_row], buffers, log_p)


def sample_typical(logits: torch.Tensor, config: TypicalConfig, generator: torch.Generator) -> int:
    """Next root token: a sample from the tempered distribution truncated to typical tokens."""
    probs = tempered_probs(logits[None], config.temperature)[0].cpu()  # [V]; the generator lives on the CPU
    keep = probs > typical_threshold(probs[None], config)[0]
    keep[probs.argmax()] = True
    probs = torch.where(keep, probs, 0.0)
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))
