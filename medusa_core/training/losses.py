"""Head training losses: hard labels (Medusa-1) and soft labels (Medusa-2's self-distillation).

Head k at row r (position t) predicts the token at t+k+2. Hard labels are that token. Soft labels
are the base model's own distribution over it, read from the frozen lm_head at the row r+k+1 that
predicts it, so they cost one extra projection and no storage. Both losses are means per head,
combined with weights decay^k (Medusa trains with 0.8^k) so later, noisier heads can count less.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from medusa_core.training.distill_data import IGNORE

LOSSES = ("hard", "soft")


def head_weights(num_heads: int, decay: float) -> torch.Tensor:
    """[K] weights decay^k."""
    return decay ** torch.arange(num_heads, dtype=torch.float32)


def weighted_head_mean(per_position: torch.Tensor, valid: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """per_position, valid [K, B] -> sum_k w_k mean_valid(loss_k) / sum_k w_k."""
    valid = valid.to(per_position.dtype)
    per_head = (per_position * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1)  # [K]
    w = weights.to(per_head.device)
    return (per_head * w).sum() / w.sum()


def hard_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """logits [K, B, V], targets [B, K] (IGNORE where none) -> weighted cross-entropy."""
    k, b, v = logits.shape
    tgt = targets.T  # [K, B]
    ce = F.cross_entropy(logits.reshape(k * b, v).float(), tgt.reshape(-1), ignore_index=IGNORE, reduction="none")
    return weighted_head_mean(ce.reshape(k, b), tgt != IGNORE, weights)


def teacher_rows(rows: torch.Tensor, num_heads: int, num_rows: int) -> torch.Tensor:
    """Rows [B] -> [K, B] rows whose lm_head output is the base distribution of head k's target.

    Clamped into the cache; a clamped row only occurs where the target is IGNORE (past the end)."""
    ahead = torch.arange(1, num_heads + 1, device=rows.device)[:, None]  # [K, 1]
    return (rows[None, :] + ahead).clamp(max=num_rows - 1)


def teacher_logits(hidden: torch.Tensor, lm_head: nn.Module, rows: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The frozen base model's logits [K, B, V] at each head's target position."""
    with torch.no_grad():
        states = hidden[teacher_rows(rows, num_heads, hidden.shape[0])]  # [K, B, d]
        return lm_head(states.to(lm_head.weight.device, torch.float32))


def soft_loss(logits: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """KL(base || head) per position, logits and teacher [K, B, V], over positions with a target."""
    log_q = F.log_softmax(logits.float(), dim=-1)
    log_p = F.log_softmax(teacher.float(), dim=-1)
    kl = F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(dim=-1)  # [K, B]
    return weighted_head_mean(kl, targets.T != IGNORE, weights)
