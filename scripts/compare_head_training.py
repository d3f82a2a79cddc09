"""Head-training choices decided by held-out measurement, one change at a time from a baseline.

Every variant trains on the same distill chunks and is measured on the same held-out
conversations (the training split's validation part: ShareGPT prompts no variant trained on),
ranked over the proposal vocabulary as decoding ranks. The proposal vocabulary's size is measured
without retraining: the baseline heads ranked within the N most frequent answer tokens.
A killed run resumes: finished variants are read back, an unfinished one resumes its checkpoint.
With --init-heads, the variants continue training those heads instead (one epoch on chunks they
never saw: pick them with --first-chunk), and each records the heads it started from on the same rows.
With --teacher-forced FOLDER, the baseline is compared with itself plus as many chunks of ShareGPT's own
replies (scripts/make_sharegpt_reply_chunks.py) and, as the control, plus as many more self-distilled
chunks; both are added to training alone, so every variant is validated on the same rows.

    python scripts/compare_head_training.py --distilled data/distill/sharegpt-smollm2-135m --chunks 4 \
        --work /tmp/head-cmp --out benchmarks/head-training-comparison.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from medusa_core.modeling.heads_io import load_heads  # noqa: E402
from medusa_core.modeling.models import load_base_model  # noqa: E402
from medusa_core.training.distill_chunks import iter_chunks  # noqa: E402
from medusa_core.training.training import (  # noqa: E402
    TrainConfig,
    evaluate_heads,
    prepare_hidden_cache,
    split_conversations,
    train_heads,
    training_lm_head,
)
from medusa_core.training.training_data import training_vocabulary  # noqa: E402

BASELINE = "baseline (hard labels, 1 ResBlock, equal weights, lr 1e-3, 1 epoch)"
# name -> the settings that differ from the baseline
VARIANTS: dict[str, dict] = {
    BASELINE: {},
    "soft labels (KL to the base model)": {"loss": "soft"},
    "2 ResBlocks per head": {"num_layers": 2},
    "head weights 0.8^k": {"head_weight_decay": 0.8},
    "lr 3e-3": {"lr": 3e-3},
    "2 epochs": {"epochs": 2},
    "lr 5e-4": {"lr": 5e-4},
    "proposal vocabulary 4096, trained on it": {"proposal_vocab_size": 4096},
}
# Continued training of heads with 2 ResBlocks and a shared lm_head (the shipped layout).
CONTINUED_VARIANTS: dict[str, dict] = {
    "continued as they are (shared lm_head, 2 ResBlocks)": {},
    "continued with own projections": {"own_projection": True},
    "continued with a third ResBlock": {"num_layers": 3},
    "continued with own projections and a third ResBlock": {"own_projection": True, "num_layers": 3},
    "continued as they are, lr 1e-4": {"lr": 1e-4},
    "continued reading the root token": {"root_token": True},
    "continued reading the root token, lr 1e-4, root input lr 1e-3": {"root_token": True, "lr": 1e-4, "root_lr": 1e-3},
    "continued reading the root token, lr 1e-4, root input lr 3e-3": {"root_token": True, "lr": 1e-4, "root_lr": 3e-3},
}
VOCAB_SIZES = (1024, 2048, 4096, 8192, None)


def mix_variants(replies: Path, more_distilled: Path, count: int) -> dict[str, dict]:
    """The baseline, and the baseline with `count` more chunks of either kind in training alone."""
    return {
        BASELINE: {},
        f"plus {count} chunks of ShareGPT's own replies (teacher-forced)": {"train_only": (str(replies),)},
        f"plus {count} more self-distilled chunks (the control)": {"train_only": (str(more_distilled),)},
    }


def chunk_subset(folder: str, count: int, work: Path, first: int = 0) -> Path:
    """A folder of links to `count` chunks from the `first`, so every variant reads the same data."""
    subset = work / (f"chunks-{count}" if first == 0 else f"chunks-{first}-{first + count - 1}")
    subset.mkdir(parents=True, exist_ok=True)
    chunks = list(iter_chunks(folder))[first : first + count]
    if len(chunks) < count:
        raise SystemExit(f"{folder} has only {len(chunks)} chunks")
    for chunk in chunks:
        link = subset / chunk.name
        if not link.exists():
            link.symlink_to(chunk.resolve())
    return subset


def run_variant(base, config: TrainConfig) -> dict:
    card_file = Path(config.out) / "training.json"
    if not card_file.is_file():
        start = time.perf_counter()
        train_heads(base, config)
        card = json.loads(card_file.read_text())
        card["seconds"] = time.perf_counter() - start
        card_file.write_text(json.dumps(card, indent=1))
    return json.loads(card_file.read_text())


def vocab_sweep(base, config: TrainConfig) -> list[dict]:
    """The baseline heads ranked within the N most frequent answer tokens, on the held-out rows."""
    cache = prepare_hidden_cache(base, config, None)
    _, val_ids = split_conversations(len(cache.tokens), config.val_fraction, config.seed)
    rows, targets = cache.targets(config.num_heads, val_ids)
    heads = load_heads(config.out, base.hidden_size, base.vocab_size).float().eval()
    full = training_lm_head(base, None)
    sweep = []
    for size in VOCAB_SIZES:
        vocab = training_vocabulary(cache, base.vocab_size, size)
        _, accuracy = evaluate_heads(heads, full, cache, rows, targets, vocab)
        sweep.append({"proposal_vocab_size": int(vocab.shape[0]), "top1": accuracy.top1, "top5": accuracy.top5})
    return sweep


def markdown(results: list[dict], sweep: list[dict]) -> str:
    lines = ["| variant | top-1 per head (proposal vocabulary) | top-5 per head | sum of top-1 | train s |",
             "|---|---|---|---|---|"]
    before = next((r["validation_proposal_before"] for r in results if "validation_proposal_before" in r), None)
    if before:
        results = [{"name": "the heads it started from, unchanged", "validation_proposal": before}] + results
    for r in results:
        acc = r["validation_proposal"]
        lines.append(
            f"| {r['name']} | {' / '.join(f'{x:.3f}' for x in acc['top1'])} | "
            f"{' / '.join(f'{x:.3f}' for x in acc['top5'])} | {sum(acc['top1']):.3f} | {r.get('seconds', 0):.0f} |"
        )
    lines += ["", "| proposal vocabulary | top-1 per head | top-5 per head |", "|---|---|---|"]
    for s in sweep:
        lines.append(f"| {s['proposal_vocab_size']} | {' / '.join(f'{x:.3f}' for x in s['top1'])} | "
                     f"{' / '.join(f'{x:.3f}' for x in s['top5'])} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--distilled", required=True, help="folder of distill chunks")
    p.add_argument("--chunks", type=int, default=4, help="train on the first N chunks")
    p.add_argument("--work", required=True, help="folder for the variants' heads and checkpoints")
    p.add_argument("--out", required=True, help="JSON file of the comparison")
    p.add_argument("--first-chunk", type=int, default=0, help="the chunks start at this one")
    p.add_argument("--init-heads", default=None, help="compare ways to continue training these heads")
    p.add_argument("--teacher-forced", default=None,
                   help="folder of ShareGPT reply chunks: compare adding --chunks of them against adding as many "
                        "more self-distilled chunks")
    p.add_argument("--only", nargs="*", default=None, help="run only these variants (full names, or prefixes)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    subset = chunk_subset(args.distilled, args.chunks, work, args.first_chunk)
    base = load_base_model(None, "cpu", "float32")
    baseline = TrainConfig(prompts="", distilled=(str(subset),), out="", epochs=1, checkpoint_every=500)
    variants = VARIANTS
    if args.init_heads:  # heads that read the root token keep reading it
        reads_root = load_heads(args.init_heads, base.hidden_size, base.vocab_size).config.root_token
        baseline = dataclasses.replace(baseline, init_heads=args.init_heads, num_layers=2, root_token=reads_root)
        variants = CONTINUED_VARIANTS
    if args.teacher_forced:
        variants = mix_variants(chunk_subset(args.teacher_forced, args.chunks, work / "replies"),
                                chunk_subset(args.distilled, args.chunks, work, args.first_chunk + args.chunks),
                                args.chunks)
    results = []
    for i, (name, change) in enumerate(variants.items()):
        # A full name picks that variant alone (one name may begin another's); anything else is a prefix.
        if args.only and not any(name == o or (o not in variants and name.startswith(o)) for o in args.only):
            continue
        config = dataclasses.replace(baseline, out=str(work / f"variant-{i}"), **change)
        results.append({"name": name, "change": change} | run_variant(base, config))
        print(markdown(results, []), flush=True)
    # The sweep ranks the baseline's heads: only once they exist (a run with --only may not train them).
    trained = not args.init_heads and not args.teacher_forced and (work / "variant-0" / "training.json").is_file()
    sweep = vocab_sweep(base, dataclasses.replace(baseline, out=str(work / "variant-0"))) if trained else []
    report = {"format": "medusa-head-training-comparison/1", "chunks": args.chunks, "first_chunk": args.first_chunk,
              "init_heads": args.init_heads, "teacher_forced": args.teacher_forced, "variants": results,
              "proposal_vocab_sweep": sweep}
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(markdown(results, sweep))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
