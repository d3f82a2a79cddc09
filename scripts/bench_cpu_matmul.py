"""Time the linear layers of one decoding step on the CPU, by row count, for each matmul path.

    .venv/bin/python scripts/bench_cpu_matmul.py [--rows 1,2,3,4,6,8,12,16,24,32] [--repeats 9]

Weights of SmolLM2-135M's shapes (its 30 blocks' 7 projections, then the 49,152 x 576 lm_head),
random, 583 MB in all, so every pass streams them from memory as a decoding step does. For each
row count, the median over `--repeats` rounds of one pass over all of them with: PyTorch's
`x @ W.T` (nn.Linear), `(W @ x.T).T` (FewRowsLinear's fallback) and our kernel
(medusa_core/accel/kernels/few_rows.c); the paths alternate within each round so drift hits all alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from medusa_core.accel.cpu_kernel import built_kernel  # noqa: E402

BLOCK_SHAPES = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]  # (out, in)
LAYERS = 30
VOCAB = 49152


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,2,3,4,6,8,12,16,24,32")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kernel = built_kernel()[0]  # whatever the per-machine decision says: this script measures it
    if kernel is None:
        sys.exit("the kernel is not available here (no C compiler, or MEDUSA_CPU_KERNEL=0)")
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(o, i, generator=gen) * 0.02 for _ in range(LAYERS) for o, i in BLOCK_SHAPES]
    lm_head = torch.randn(VOCAB, 576, generator=gen) * 0.02
    paths = {
        "x @ W.T": lambda x, w: F.linear(x, w),
        "(W @ x.T).T": lambda x, w: torch.mm(w, x.T).T.contiguous(),
        "kernel": kernel,
    }
    print(f"{args.threads} threads; blocks = the {len(weights)} block projections, lm_head = {VOCAB} x 576 (ms, median)")
    print("rows | " + " | ".join(f"{name} blocks / lm_head" for name in paths))
    with torch.inference_mode():
        for rows in (int(r) for r in args.rows.split(",")):
            xs = [torch.randn(rows, w.shape[1], generator=gen) for w in weights]
            x_head = torch.randn(rows, 576, generator=gen)
            times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in paths}
            for _ in range(args.repeats):
                for name, matmul in paths.items():
                    start = time.perf_counter()
                    for x, w in zip(xs, weights):
                        matmul(x, w)
                    middle = time.perf_counter()
                    matmul(x_head, lm_head)
                    times[name][0].append(middle - start)
                    times[name][1].append(time.perf_counter() - middle)
            cells = [f"{statistics.median(b) * 1e3:6.1f} / {statistics.median(h) * 1e3:5.1f}" for b, h in times.values()]
            print(f"{rows:4d} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
