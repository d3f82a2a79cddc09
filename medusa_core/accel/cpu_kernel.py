"""Builds and loads the few-rows matmul kernel (kernels/few_rows.c) for the CPU, once per machine.

The kernel is compiled with the system C compiler for the CPU at hand (-march=native) into
<cache>/kernels ($MEDUSA_CACHE, as for the default model), keyed by the source, the compiler, its
flags and the CPU, and loaded with ctypes. It runs torch's thread count; with GCC it also shares
torch's OpenMP runtime (torch's Linux wheels load libgomp.so.1 first, and the loader reuses it),
while another compiler's OpenMP library would bring a second thread pool. Without a C
compiler, or with MEDUSA_CPU_KERNEL=0, `built_kernel()` has none and callers use PyTorch's matmul.

Whether it runs at all is measured per machine (cpu_matmul.py): on some CPUs MKL is faster.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
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
        subprocess.run(
            [compiler, *FLAGS, str(SOURCE), "-o", str(built)],
            check=True,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
        )
        os.replace(built, target)  # atomic: concurrent builders never load a half-written file
    return target


@functools.cache
def built_kernel() -> tuple[FewRowsKernel | None, Path | None, str]:
    """The compiled kernel (None: switched off or not buildable), its library and, without one,
    why not."""
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
