"""Two generations at once in one process, as the app runs them, against one alone.

Each mode decodes the same held-out prompts with the default model, heads and tree; modes
alternate in rounds so the machine's drift hits all alike:
- alone: one generation, holding the app's CPU share (ThreadBudget: every core);
- two, shared: two generations in two threads, each holding its share (one core each here);
- two, unshared: two threads with torch's default thread count each (how the app ran before).
Prints a Markdown table and writes JSON. Run on an otherwise idle machine.
Usage: python scripts/bench_concurrency.py [--rounds 3] [--max-new-tokens 64] [--out benchmarks/concurrency-cpu.json]
"""

import argparse
import json
import statistics
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from medusa_core import DecodeConfig, ThreadBudget, generate, load_medusa, stream_generation  # noqa: E402
from medusa_core.training.distill_data import read_prompt_file  # noqa: E402


def tokens_per_second(medusa, prompts, config, share) -> float:
    """Decode the prompts one after another, sizing this thread's share before each step as the app does."""
    tokens = seconds = 0.0
    with share() as size:
        for prompt in prompts:
            for item in stream_generation(medusa, prompt, None, config):
                size()
            tokens += len(item.tokens)
            seconds += item.seconds
    return tokens / seconds


def two_at_once(medusa, prompts, config, share) -> list[float]:
    results = [0.0, 0.0]

    def worker(i: int) -> None:
        results[i] = tokens_per_second(medusa, prompts[i::2] + prompts[1 - i :: 2], config, share)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--prompts", default=str(ROOT / "data" / "prompts" / "sharegpt-test.txt"))
    parser.add_argument("--num-prompts", type=int, default=4)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "concurrency-cpu.json"))
    args = parser.parse_args()
    default_threads = torch.get_num_threads()
    medusa = load_medusa(device="cpu")
    prompts = read_prompt_file(args.prompts)[: args.num_prompts]
    config = DecodeConfig(args.max_new_tokens, trace_text=False)
    budget = ThreadBudget()

    def unshared():
        torch.set_num_threads(default_threads)
        return nullcontext(lambda: default_threads)

    generate(medusa, prompts[0], None, DecodeConfig(8, trace_text=False))  # warm-up
    rows = {"alone": [], "two, shared": [], "two, unshared": []}
    for _ in range(args.rounds):
        rows["alone"].append([tokens_per_second(medusa, prompts, config, budget.generation)])
        rows["two, shared"].append(two_at_once(medusa, prompts, config, budget.generation))
        rows["two, unshared"].append(two_at_once(medusa, prompts, config, unshared))
    alone = statistics.median(r[0] for r in rows["alone"])
    result = {
        "cores": budget.cores,
        "default_torch_threads": default_threads,
        "rounds": args.rounds,
        "prompts": f"{Path(args.prompts).name}[:{args.num_prompts}]",
        "max_new_tokens": args.max_new_tokens,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "modes": {
            name: {
                "tokens_per_second_per_generation": statistics.median(v for r in runs for v in r),
                "of_alone": statistics.median(v for r in runs for v in r) / alone,
                "runs": runs,
            }
            for name, runs in rows.items()
        },
    }
    print("| mode | tokens/s per generation (median) | of one alone |\n|---|---:|---:|")
    for name, m in result["modes"].items():
        print(f"| {name} | {m['tokens_per_second_per_generation']:.1f} | {100 * m['of_alone']:.0f}% |")
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
