"""Sampling speed on held-out chat prompts: exact sampling and typical acceptance on Medusa trees
against plain sampling (`generate(do_sample=True)`) and transformers' prompt lookup with sampling.

Same prompts, temperatures 0.7 and 1.0, the default model with its shipped heads, tree and lookup;
methods alternate per prompt. Tokens per step counts forward passes of the target model (for
transformers' methods, one per step its streamer reports). Prints a Markdown table, writes JSON.
Usage: python scripts/bench_sampling.py [--num-prompts 6] [--max-new-tokens 64] [--out benchmarks/sampling-cpu.json]
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from medusa_core import DecodeConfig, SamplingConfig, TypicalConfig, generate, load_medusa  # noqa: E402
from medusa_core.bench.methods import StepSizes, hf_kwargs  # noqa: E402
from medusa_core.bench.runner import encode_prompts  # noqa: E402
from medusa_core.training.distill_data import read_prompt_file  # noqa: E402


def hf_sampling(medusa, ids, n, temperature, seed, lookup_tokens=None):
    torch.manual_seed(seed)
    steps = StepSizes()
    kwargs = hf_kwargs(medusa.base, ids, n) | dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
    if lookup_tokens:
        kwargs["prompt_lookup_num_tokens"] = lookup_tokens
    start = time.perf_counter()
    with torch.inference_mode():
        out = medusa.base.model.generate(**kwargs, streamer=steps)
    seconds = time.perf_counter() - start
    return out.shape[1] - len(ids), len(steps.sizes), seconds


def ours(medusa, ids, n, config):
    record = generate(medusa, "", None, config, prompt_ids=ids)
    return len(record.tokens), record.num_steps, record.seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-prompts", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--prompts", default=str(ROOT / "data" / "prompts" / "sharegpt-test.txt"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "sampling-cpu.json"))
    args = parser.parse_args()
    medusa = load_medusa(device="cpu")
    prompts = read_prompt_file(args.prompts)[: args.num_prompts]
    ids = encode_prompts(medusa.base, prompts, args.max_new_tokens, 10)
    n, lookup = args.max_new_tokens, medusa.default_lookup
    rows = []
    for temperature in (0.7, 1.0):
        methods = {
            "hf-sampling": lambda p, s: hf_sampling(medusa, p, n, temperature, s),
            "hf-prompt-lookup-3 (sampling)": lambda p, s: hf_sampling(medusa, p, n, temperature, s, 3),
            "medusa exact sampling": lambda p, s: ours(medusa, p, n, DecodeConfig(
                n, seed=s, trace_text=False, lookup=lookup, sampling=SamplingConfig(temperature))),
            "medusa typical (Medusa's defaults)": lambda p, s: ours(medusa, p, n, DecodeConfig(
                n, seed=s, trace_text=False, lookup=lookup, typical=TypicalConfig(temperature))),
        }
        ours(medusa, ids[0], 8, DecodeConfig(8, sampling=SamplingConfig(temperature)))  # warm-up
        totals = {name: [0, 0, 0.0, []] for name in methods}
        for i, p in enumerate(ids):
            for name, fn in methods.items():
                tokens, steps, seconds = fn(p, i)
                t = totals[name]
                t[0], t[1], t[2] = t[0] + tokens, t[1] + steps, t[2] + seconds
                t[3].append(tokens / seconds)
        for name, (tokens, steps, seconds, tps) in totals.items():
            rows.append({"temperature": temperature, "method": name, "tokens_per_step": tokens / max(1, steps),
                         "tokens_per_second_median": statistics.median(tps), "tokens": tokens, "steps": steps})
    print("| temperature | method | tokens/step | tokens/s (median over prompts) |\n|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['temperature']} | {r['method']} | {r['tokens_per_step']:.2f} | {r['tokens_per_second_median']:.1f} |")
    Path(args.out).write_text(json.dumps({"prompts": f"{Path(args.prompts).name}[:{args.num_prompts}]",
                                          "max_new_tokens": n, "threads": torch.get_num_threads(),
                                          "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
