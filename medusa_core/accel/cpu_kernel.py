"""Builds and loads the few-rows matmul kernel (kernels/few_rows.c) for the CPU, once per machine.

The kernel is compiled with the system C compiler for the CPU at hand (-march=native) into
<cache>/kernels ($MEDUSA_CACHE, as for the default model), keyed by the source, the compiler, its
flags and the CPU, and loaded with ctypes. It runs torch's thread count; with GCC it also shares
torch's OpenMP runtime (torch's Linux wheels load libgomp.so.1 first, and the loader reuses it),
while another compiler's OpenMP library would bring a second thread pool. Without a C
compiler, or with MEDUSA_CPU_KERNEL=0, `few_rows_kernel()` returns None and callers fall back to
PyTorch's matmul.

The kernel is a choice made by measurement, not by assumption: once per machine (cached beside the
build) it is timed against PyTorch's `x @ w.T` on a decoding-sized weight for 1, 4 and 16 rows, and
used only if it is faster at every one of them. `kernel_report()` says what was decided and why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import statistics
import time
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from medusa_core.modeling.default_model import cache_root

SOURCE = Path(__file__).with_name("kernels") / "few_rows.c"
FLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared")
DISABLE_ENV = "MEDUSA_CPU_KERNEL"
BUILD_TIMEOUT_S = 120


@dataclass(frozen=True)
class FewRowsKernel:
    """out = x @ w.T for float32, contiguous CPU tensors x [M, K] and w [N, K]."""

    library: ctypes.CDLL
    description: str

    def __call__(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        rows, k = x.shape
        out = torch.empty(rows, w.shape[0], dtype=torch.float32)  # [M, N]
        self.library.few_rows_matmul(
            x.data_ptr(), w.data_ptr(), out.data_ptr(), rows, w.shape[0], k, torch.get_num_threads()
        )
        return out


def _cpu_identity() -> str:
    """The CPU's model and flags: -march=native code must not run on another CPU."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    wanted = [line for line in lines if line.startswith(("model name", "flags", "Features"))]
    return "\n".join(sorted(set(wanted))) or platform.machine()


def build_kernel(compiler: str) -> Path:
    """Compile the kernel (or reuse the cached build); returns the shared library's path."""
    key = "\n".join([SOURCE.read_text(), compiler, " ".join(FLAGS), _cpu_identity(), platform.machine()])
    target = cache_root() / "kernels" / f"few_rows-{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(built)], check=True, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        os.replace(built, target)  # atomic: concurrent builders never load a half-written file
    return target


MEASURED_ROWS = (1, 4, 16)
MEASURE_SHAPE = (1536, 576)  # [N, K]: an MLP projection of SmolLM2-135M, the default model


def _median_seconds(fn, repeats: int = 15) -> float:
    fn()  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_kernel(kernel: FewRowsKernel) -> dict:
    """Median ms of the kernel and of PyTorch for each measured row count, the same inputs alternated
    within one call, so the machine's drift hits both alike."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(*MEASURE_SHAPE, generator=gen)
    timings = {}
    with torch.inference_mode():
        for rows in MEASURED_ROWS:
            x = torch.randn(rows, MEASURE_SHAPE[1], generator=gen)
            ours = _median_seconds(lambda: kernel(x, w))
            torch_s = _median_seconds(lambda: x @ w.T)
            timings[str(rows)] = {"kernel_ms": 1e3 * ours, "torch_ms": 1e3 * torch_s}
    return {"threads": torch.get_num_threads(), "timings": timings,
            "faster": all(t["kernel_ms"] < t["torch_ms"] for t in timings.values())}


def kernel_decision(library_path: Path, kernel: FewRowsKernel) -> dict:
    """The measured decision for this build and thread count, measured once and cached as JSON."""
    path = library_path.with_name(f"{library_path.stem}-threads{torch.get_num_threads()}.json")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        pass
    decision = measure_kernel(kernel)
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps(decision, indent=1))
    os.replace(tmp, path)
    return decision


@functools.cache
def built_kernel() -> tuple[FewRowsKernel | None, Path | None, str]:
    """The compiled kernel whatever it measures (None: switched off or not buildable), its library
    and, without one, why not."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return None, None, f"{DISABLE_ENV}=0"
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        return None, None, "no C compiler for the few-rows kernel"
    try:
        library_path = build_kernel(compiler)
        library = ctypes.CDLL(str(library_path))
    except (OSError, subprocess.SubprocessError):  # no OpenMP, a failed or hung build, an unloadable file
        return None, None, "the few-rows kernel did not build here"
    library.few_rows_matmul.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 3 + [ctypes.c_int]
    library.few_rows_matmul.restype = None
    return FewRowsKernel(library, f"kernels/few_rows.c ({Path(compiler).name} {' '.join(FLAGS[:3])})"), library_path, ""


@functools.cache
def _kernel_and_report() -> tuple[FewRowsKernel | None, str]:
    kernel, library_path, why_not = built_kernel()
    if kernel is None or library_path is None:
        return None, f"PyTorch matmul ({why_not})"
    decision = kernel_decision(library_path, kernel)
    figures = ", ".join(f"{r} rows {t['kernel_ms']:.2f} vs {t['torch_ms']:.2f} ms" for r, t in decision["timings"].items())
    if not decision["faster"]:
        return None, f"PyTorch matmul (the few-rows kernel measured slower here: {figures})"
    return kernel, f"few-rows kernel (measured faster than PyTorch here: {figures})"


def reset() -> None:
    """Forget the build and the decision of this process (after changing CC or MEDUSA_CPU_KERNEL)."""
    built_kernel.cache_clear()
    _kernel_and_report.cache_clear()


def few_rows_kernel() -> FewRowsKernel | None:
    """The compiled kernel where it measured faster than PyTorch on this machine, else None
    (switched off, no compiler, a failed build, or slower). The first call builds and measures."""
    return _kernel_and_report()[0]


def kernel_report() -> str:
    """What runs the few-row matmuls on this machine and why, in words."""
    return _kernel_and_report()[1]
