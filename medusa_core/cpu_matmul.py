"""Faster linear layers for the few-token passes of speculative decoding on the CPU.

With MKL, `x @ W.T` for 2..5 rows of x runs 1.7-2.2x slower than one row, while `(W @ x.T).T`
streams W about as fast as the one-row kernel: over the 210 linear layers of SmolLM2-135M's
blocks (2 threads, this repository's 2-core CPU) one row takes 36 ms, and 2 / 3 / 4 rows take
38 / 44 / 43 ms that way against 64 / 81 / 62 ms (benchmarks/README.md). From 6 rows on PyTorch's
own kernel wins again, except for vocabulary projections (many more outputs than inputs): there
the transposed form wins up to at least 16 rows (SmolLM2's lm_head, 8 rows: 14 ms against 24 ms).
Verification trees pass a few rows, so the loader swaps every nn.Linear of a CPU model to this
class; other row counts keep PyTorch's kernel.
"""

from __future__ import annotations

import torch
from torch import nn

MAX_ROWS = 5
WIDE_MAX_ROWS = 16  # for layers with at least WIDE_RATIO times more outputs than inputs
WIDE_RATIO = 8


class FewRowsLinear(nn.Linear):
    """nn.Linear computing (W @ x^T)^T when x has 2..MAX_ROWS rows (WIDE_MAX_ROWS for
    vocabulary projections) on the CPU."""

    @property
    def max_rows(self) -> int:
        return WIDE_MAX_ROWS if self.out_features >= WIDE_RATIO * self.in_features else MAX_ROWS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if not 2 <= rows <= self.max_rows or x.device.type != "cpu":
            return super().forward(x)
        out = torch.mm(self.weight, x.reshape(rows, x.shape[-1]).T).T.contiguous()  # [rows, out_features]
        if self.bias is not None:
            out += self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


def use_few_rows_linears(model: nn.Module) -> nn.Module:
    """Swap the class of every plain nn.Linear in `model` (weights untouched); returns `model`."""
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = FewRowsLinear
    return model
