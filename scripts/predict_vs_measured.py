"""Predicted against measured speed of decoding setups on held-out prompts.

Predicted: the optimiser's cost model, i.e. tokens per step from the decoding walk over a
calibration table's answers (optimizer.walk) and seconds per step from a latency profile timed
through the decoder's own step (optimizer.step_cost), both made on other prompts than these.
Measured: greedy decoding of the held-out prompts with each setup, setups alternating per prompt,
and (unless --profile names a profile file) one round of the profile's step shapes after each
prompt, so that drift in this machine's speed hits the prediction and the measurement alike; tokens
per second counts decoding steps only (the prefill, the same for every setup and outside the step's
cost model, is left out; end-to-end figures beside). Prints a Markdown table and writes JSON.

Usage: python scripts/predict_vs_measured.py --accuracy A --prompts data/prompts/sharegpt-test.txt
       [--num-prompts 16] [--max-new-tokens 128] [--profile P | --profile-out P]
       [--setup NAME=TREE[:LOOKUP_TOKENS] ...] [--model module:function] [--out results.json]
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medusa_core import DecodeConfig, generate  # noqa: E402
from medusa_core.bench.latency import decoder_step_fn  # noqa: E402
from medusa_core.bench.runner import encode_prompts, machine_info  # noqa: E402
from medusa_core.spec.lookup import lookup_or_none  # noqa: E402
from medusa_core.spec.trees import resolve_tree_with_lookup  # noqa: E402
from medusa_core.training.distill_data import read_prompt_file  # noqa: E402
from optimizer import load_accuracy_table, load_latency_profile, predict_setup, save_latency_profile  # noqa: E402
from optimizer.measure import load_model  # noqa: E402
from optimizer.step_cost import profile_from_times, profile_shapes, time_round  # noqa: E402

HEADS = ROOT / "heads" / "smollm2-135m-instruct"
PROFILE_SIZES = (1, 2, 3, 4, 5, 6, 8, 12, 16, 24, 32, 48, 64, 80)
DEFAULT_SETUPS = (f"default={HEADS / 'tree.json'}", f"heads alone={HEADS / 'tree.json'}:0",
                  f"length tree={HEADS / 'tree-length.json'}",
                  f"length tree, heads alone={HEADS / 'tree-length.json'}:0")


def parse_setup(spec: str) -> tuple[str, tuple, object]:
    """NAME=TREE[:LOOKUP_TOKENS]: the tree file's own lookup unless LOOKUP_TOKENS (0: off) is given."""
    name, _, rest = spec.partition("=")
    tree_spec, _, tokens = rest.rpartition(":") if rest.rpartition(":")[2].isdigit() else (rest, "", "")
    tree, lookup = resolve_tree_with_lookup(tree_spec)
    if tokens:
        lookup = lookup_or_none(int(tokens), *((lookup.min_ngram, lookup.max_ngram) if lookup else (2, 3)))
    return name, tree, lookup


def measure(medusa, prompts, ids, setups, max_new_tokens, between=None):
    """Totals per setup; ``between()`` runs after each prompt's setups (a profile round)."""
    totals = {name: {"tokens": 0, "steps": 0, "timed_tokens": 0, "step_seconds": 0.0, "seconds": 0.0}
              for name, *_ in setups}
    for prompt, prompt_ids in zip(prompts, ids):
        if between is not None:
            between()
        for name, tree, lookup in setups:
            config = DecodeConfig(max_new_tokens=max_new_tokens, trace_text=False, lookup=lookup)
            record = generate(medusa, prompt, tree, config, prompt_ids)
            total = totals[name]
            total["tokens"] += len(record.tokens)
            total["steps"] += record.num_steps
            total["step_seconds"] += sum(step.seconds for step in record.steps[1:])  # step 1 also ran the prefill
            total["seconds"] += record.seconds
            total["timed_tokens"] += sum(len(s.emitted) for s in record.steps[1:])
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accuracy", required=True, help="calibration table with segments and lookups")
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--num-prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--profile", help="decoder-step profile to use; default: one timed interleaved with the runs")
    parser.add_argument("--profile-out", help="write the interleaved profile here")
    parser.add_argument("--setup", action="append", help="NAME=TREE[:LOOKUP_TOKENS] (repeatable)")
    parser.add_argument("--model", help="base model (default: the embedded one) or module:function -> MedusaModel")
    parser.add_argument("--heads")
    parser.add_argument("--out")
    args = parser.parse_args()
    table = load_accuracy_table(args.accuracy)
    setups = [parse_setup(s) for s in args.setup or DEFAULT_SETUPS]
    medusa = load_model(args.model, args.heads, "auto", "auto")
    prompts = read_prompt_file(args.prompts)[: args.num_prompts]
    ids = encode_prompts(medusa.base, prompts, args.max_new_tokens, 16)
    if args.profile:
        totals = measure(medusa, prompts, ids, setups, args.max_new_tokens)
        profile = load_latency_profile(args.profile)
    else:
        step = decoder_step_fn(medusa, prefix_len=200)
        shapes = profile_shapes(PROFILE_SIZES, medusa.num_heads, 10)
        for shape in shapes:
            step(shape)  # warm-up
        times = [[] for _ in shapes]
        round_ = lambda: [t.append(s) for t, s in zip(times, time_round(step, shapes))]  # noqa: E731
        totals = measure(medusa, prompts, ids, setups, args.max_new_tokens, round_)
        round_()
        info = {"model": medusa.base.model_id, "device": str(medusa.base.device), "prefix_len": 200,
                "dtype": str(medusa.base.dtype).removeprefix("torch."), "timed": "decoder step, between the runs"}
        profile = profile_from_times(shapes, times, info, {"repeats": len(times[0]), "warmup": 1})
        if args.profile_out:
            save_latency_profile(profile, args.profile_out)
    rows = []
    print("| setup | nodes | lookup | tokens/step predicted | measured | error | tokens/s predicted | measured "
          "(steps) | error | measured end to end |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, tree, lookup in setups:
        predicted = predict_setup(table, profile, tree, lookup)
        total = totals[name]
        per_step = total["tokens"] / total["steps"]
        speed = total["timed_tokens"] / total["step_seconds"]
        row = {"setup": name, "nodes": len(tree), "lookup_tokens": lookup.tokens if lookup else 0,
               "predicted_tokens_per_step": predicted.tokens_per_step, "measured_tokens_per_step": per_step,
               "predicted_tokens_per_second": predicted.tokens_per_second, "measured_tokens_per_second": speed,
               "measured_end_to_end_tokens_per_second": total["tokens"] / total["seconds"]} | total
        rows.append(row)
        print(f"| {name} | {len(tree)} | {row['lookup_tokens']} | {predicted.tokens_per_step:.3f} | {per_step:.3f} | "
              f"{predicted.tokens_per_step / per_step - 1:+.1%} | {predicted.tokens_per_second:.2f} | {speed:.2f} | "
              f"{predicted.tokens_per_second / speed - 1:+.1%} | {row['measured_end_to_end_tokens_per_second']:.2f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "accuracy": args.accuracy, "prompts": args.prompts, "num_prompts": len(prompts),
            "max_new_tokens": args.max_new_tokens, "machine": machine_info(medusa.base.device, medusa.base.dtype),
            "profile": profile.to_json(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
