"""Faster linear layers for the few-token passes of decoding and verification on the CPU.

A decoding step multiplies 1 to ~16 rows by every weight matrix of the model: the weights' memory
traffic dominates and the arithmetic is small. MKL handles that shape poorly on this repository's
AMD CPU: over the 210 linear layers of SmolLM2-135M's blocks (2 threads) `x @ W.T` takes 39 ms for
one row and 53-79 ms for 2-16 rows (benchmarks/README.md). `FewRowsLinear` therefore hands up to
KERNEL_MAX_ROWS rows to our own kernel (medusa_core/kernels/few_rows.c: 23 ms for one row, 32 ms
for 8, 50 ms for 16; from 17 rows on MKL is as fast). Where the kernel cannot be built (no C
compiler) it computes `(W @ x.T).T` for 2..MAX_ROWS rows (WIDE_MAX_ROWS for vocabulary
projections), which streams W about as fast as MKL's one-row kernel, and PyTorch's own kernel
otherwise. Verification trees pass a few rows, so
the loader swaps every nn.Linear of a CPU model to this class.
"""

from __future__ import annotations

import torch
from torch import nn

from medusa_core.accel.cpu_kernel import few_rows_kernel

KERNEL_MAX_ROWS = 16
MAX_ROWS = 5
WIDE_MAX_ROWS = 16  # for layers with at least WIDE_RATIO times more outputs than inputs
WIDE_RATIO = 8


class FewRowsLinear(nn.Linear):
    """nn.Linear with faster CPU paths for inputs of few rows: the kernel when gradients are off,
    else (or without the kernel) the `(W @ x.T).T` form, which autograd handles."""

    @property
    def max_rows(self) -> int:
        return WIDE_MAX_ROWS if self.out_features >= WIDE_RATIO * self.in_features else MAX_ROWS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if x.device.type != "cpu" or rows == 0:
            return super().forward(x)
        weight, kernel = self.weight, few_rows_kernel()
        if (
            kernel is not None
            and rows <= KERNEL_MAX_ROWS
            and not torch.is_grad_enabled()  # no autograd through the kernel
            and not torch.is_autocast_enabled("cpu")
            and x.dtype is weight.dtype is torch.float32
            and weight.is_contiguous()
        ):
            out = kernel(x.reshape(rows, self.in_features).contiguous(), weight)  # [rows, out_features]
        elif 2 <= rows <= self.max_rows:
            out = torch.mm(weight, x.reshape(rows, self.in_features).T).T.contiguous()  # [rows, out_features]
        else:
            return super().forward(x)
        if self.bias is not None:
            out += self.bias
        return out.view(*x.shape[:-1], self.out_features)


def use_few_rows_linears(model: nn.Module) -> nn.Module:
    """Swap the class of every plain nn.Linear in `model` (weights untouched); returns `model`."""
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = FewRowsLinear
    return model
