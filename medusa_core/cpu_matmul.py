"""Faster linear layers for the few-token passes of speculative decoding on the CPU.

With MKL, `x @ W.T` for 2..64 rows of x runs about 2x slower than one row (its GEMM packs the
whole weight), while `(W @ x.T).T` streams W once, like the one-row kernel: a 4-token pass over
all of SmolLM2-135M's linear layers takes 39 ms that way against 81 ms, and one token 42 ms
(benchmarks/README.md). Tree verification, prompt lookup and batched prefill all pass a few rows,
so the loader swaps every nn.Linear of a CPU model to this class; one-row decoding steps and
large batches keep PyTorch's own kernel.
"""

from __future__ import annotations

import torch
from torch import nn

MAX_ROWS = 48  # from 64 rows on, x @ W.T is about as fast (benchmarks/README.md)


class FewRowsLinear(nn.Linear):
    """nn.Linear computing (W @ x^T)^T when x has 2..MAX_ROWS rows on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if not 2 <= rows <= MAX_ROWS or x.device.type != "cpu":
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
