"""Faster linear layers for the few-token passes of decoding and verification on the CPU, where measured.

A decoding step multiplies 1 to ~16 rows by every weight matrix of the model: the weights' memory
traffic dominates and the arithmetic is small. How well a BLAS handles that shape depends on the
CPU: on one AMD EPYC, MKL streamed the weights at half the bandwidth and our kernel
(kernels/few_rows.c) was up to 2x faster; on one Intel Xeon, MKL was 2x faster than the kernel. So
nothing is assumed: once per machine and thread count (cached beside the kernel's build, or in the
cache folder), three ways of computing `x @ W.T` are timed for 1, 2, 4, 8 and 16 rows over weights
far larger than the caches, as a step streams them, for the blocks' shape and for a
vocabulary projection's: PyTorch's own, the `(W @ x.T).T` form, and the kernel. Each layer then
takes, for its row count, the way that measured fastest at the next measured count up (PyTorch's
own beyond 16 rows, or with gradients on where the kernel cannot go). `matmul_report()` says what
was chosen and why; `load_base_model` makes the choice at load, never mid-request.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from medusa_core.accel.cpu_kernel import built_kernel
from medusa_core.modeling.default_model import cache_root

MEASURED_ROWS = (1, 2, 4, 8, 16)
WIDE_RATIO = 8  # a layer with this many times more outputs than inputs is a vocabulary projection
SHAPES = {"block": ((1536, 576), 48), "wide": ((49152, 576), 2)}  # [N, K] and count: ~170 / 225 MB
TORCH, TRANSPOSED, KERNEL = "torch", "transposed", "kernel"


def _ms(fn: Callable[[], object], repeats: int = 5) -> float:
    fn()  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def measure_matmuls() -> dict:
    """Median ms per way, shape class and row count, the ways alternated at each count."""
    kernel = built_kernel()[0]
    gen = torch.Generator().manual_seed(0)
    timings: dict = {}
    with torch.inference_mode():
        for name, ((n, k), count) in SHAPES.items():
            weights = [torch.randn(n, k, generator=gen) for _ in range(count)]
            timings[name] = {}
            for rows in MEASURED_ROWS:
                x = torch.randn(rows, k, generator=gen)
                ways = {
                    TORCH: lambda: [x @ w.T for w in weights],
                    TRANSPOSED: lambda: [(w @ x.T).T.contiguous() for w in weights],
                }
                if kernel is not None:
                    ways[KERNEL] = lambda: [kernel(x, w) for w in weights]
                timings[name][str(rows)] = {way: _ms(fn) for way, fn in ways.items()}
    return {
        "threads": torch.get_num_threads(),
        "kernel": kernel.description if kernel else built_kernel()[2],
        "timings": timings,
    }


def decision_path() -> Path:
    library = built_kernel()[1]
    folder = library.parent if library else cache_root() / "kernels"
    stem = library.stem if library else "no-kernel"
    return folder / f"matmul-choice-{stem}-threads{torch.get_num_threads()}.json"


@functools.cache
def matmul_decision() -> dict:
    """The measured timings of this machine and thread count: measured once, then read from disk."""
    path = decision_path()
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        pass
    decision = measure_matmuls()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps(decision, indent=1))
    os.replace(tmp, path)
    return decision


def fastest(shape: str, rows: int, kernel_allowed: bool) -> str:
    """The way measured fastest at the next measured row count up (PyTorch's beyond them)."""
    if rows > MEASURED_ROWS[-1]:
        return TORCH
    measured = matmul_decision()["timings"][shape][str(next(r for r in MEASURED_ROWS if r >= rows))]
    ways = {way: ms for way, ms in measured.items() if kernel_allowed or way != KERNEL}
    return min(ways, key=ways.get)


def matmul_report() -> str:
    """What computes the few-row matmuls on this machine, in a few words (for a status line)."""
    timings = matmul_decision()["timings"]
    kernel_rows = sorted(
        {int(r) for by_rows in timings.values() for r, t in by_rows.items() if min(t, key=t.get) == KERNEL}
    )
    if kernel_rows:
        return f"our kernel at {', '.join(map(str, kernel_rows))} rows, PyTorch elsewhere (measured here)"
    return "PyTorch (measured faster here than our kernel)"


def matmul_details() -> str:
    """The measured choice per shape class and row count (for benchmark records)."""
    decision = matmul_decision()
    parts = []
    for shape, by_rows in decision["timings"].items():
        chosen = [f"{rows}: {min(t, key=t.get)}" for rows, t in by_rows.items()]
        parts.append(f"{shape} layers by rows {', '.join(chosen)}")
    return f"measured at {decision['threads']} threads ({'; '.join(parts)})"


def kernel_in_use() -> str | None:
    """The kernel's description when the measured choice runs it for some layers, else None."""
    timings = matmul_decision()["timings"]
    chosen = any(min(t, key=t.get) == KERNEL for by_rows in timings.values() for t in by_rows.values())
    return matmul_decision()["kernel"] if chosen else None


def reset() -> None:
    """Forget this process's choice (after changing the kernel's build or switch)."""
    matmul_decision.cache_clear()
    built_kernel.cache_clear()


class FewRowsLinear(nn.Linear):
    """nn.Linear that computes few-row inputs on the CPU the way that measured fastest here."""

    @property
    def shape_class(self) -> str:
        return "wide" if self.out_features >= WIDE_RATIO * self.in_features else "block"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if x.device.type != "cpu" or rows == 0 or x.dtype is not torch.float32 or torch.is_autocast_enabled("cpu"):
            return super().forward(x)
        weight = self.weight
        kernel_allowed = not torch.is_grad_enabled() and weight.is_contiguous()  # no autograd through the kernel
        way = fastest(self.shape_class, rows, kernel_allowed)
        flat = x.reshape(rows, self.in_features)
        if way == KERNEL:
            out = built_kernel()[0](flat.contiguous(), weight)  # [rows, out_features]
        elif way == TRANSPOSED:
            out = torch.mm(weight, flat.T).T.contiguous()  # [rows, out_features]
        else:
            return super().forward(x)
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], self.out_features)


def use_few_rows_linears(model: nn.Module) -> nn.Module:
    """Swap the class of every plain nn.Linear in `model` (weights untouched); returns `model`."""
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = FewRowsLinear
    return model
