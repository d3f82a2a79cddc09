"""The command-line commands: each an argument builder and a runner that prints results."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from medusa_core.engine.acceptance import TypicalConfig
from medusa_core.engine.sampling import SamplingConfig
from medusa_core.spec.lookup import LookupConfig, lookup_or_none
from medusa_core.engine.loop import DecodeConfig, generate_batch
from medusa_core.engine.records import GenerationRecord
from medusa_core.modeling.device import DEVICE_CHOICES, DTYPE_CHOICES
from medusa_core.training.distill_data import read_prompt_file
from medusa_core.modeling.models import load_base_model, load_medusa
from medusa_core.spec.trees import is_tree_file, resolve_tree_with_lookup


def add_model_args(p: argparse.ArgumentParser, heads: bool = True) -> None:
    p.add_argument("--model", default=None, help="base model: Hub id, local folder or 'default' (env MEDUSA_MODEL)")
    if heads:
        p.add_argument("--heads", default=None, help="heads folder or Hub id, or 'random' (env MEDUSA_HEADS)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)


def add_decode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tree", default=None, help="tree file, preset (chain-N, full-KxD, mc_sim_7b_63) or JSON list; default: the heads' tree")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0: lossless greedy; > 0 samples (see --sampling)")
    p.add_argument("--sampling", choices=("exact", "typical"), default="exact",
                   help="with a temperature: exact (the model's own distribution) or typical (Medusa's, lossy)")
    p.add_argument("--top-p", type=float, default=1.0, help="exact sampling: nucleus mass in (0, 1]")
    p.add_argument("--top-k", type=int, default=None, help="exact sampling: keep the k most likely tokens (>= 1)")
    p.add_argument("--posterior-threshold", type=float, default=0.09, help="typical: epsilon")
    p.add_argument("--posterior-alpha", type=float, default=0.3, help="typical: delta")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-chat", action="store_true", help="feed the raw prompt even if the model has a chat template")
    p.add_argument(
        "--lookup-tokens", type=int, default=None,
        help="also verify up to N tokens copied from the context each step (0: off; default: the heads' tree.json)",
    )
    p.add_argument("--lookup-ngram", type=int, nargs=2, default=(2, 3), metavar=("MIN", "MAX"),
                   help="shortest and longest context n-gram the lookup matches (default 2 3)")


def lookup_config(tokens: int | None, ngram: tuple[int, int], default: LookupConfig | None) -> LookupConfig | None:
    """--lookup-tokens: None keeps the heads' recommendation, 0 turns the lookup off."""
    if tokens is None:
        return default
    return lookup_or_none(tokens, *ngram)


def sampling_configs(args: argparse.Namespace) -> tuple[TypicalConfig | None, SamplingConfig | None]:
    """--temperature 0 is greedy; above 0, exact sampling (default) or typical acceptance."""
    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    if not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.temperature == 0:
        return None, None
    if args.sampling == "typical":
        return TypicalConfig(args.temperature, args.posterior_threshold, args.posterior_alpha), None
    return None, SamplingConfig(args.temperature, args.top_p, args.top_k or 0)


def decode_config(
    args: argparse.Namespace, default_lookup: LookupConfig | None, trace_text: bool = True, seed: int | None = None
) -> DecodeConfig:
    typical, sampling = sampling_configs(args)
    lookup = lookup_config(args.lookup_tokens, args.lookup_ngram, default_lookup)
    chat = False if args.no_chat else None
    return DecodeConfig(args.max_new_tokens, typical, args.seed if seed is None else seed, chat, trace_text, lookup, sampling)


class Bar:
    """A tqdm bar per named stage, fed with (stage, done, total) reports."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.name = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        kind = stage.split(" (")[0]
        if self.bar is None or kind != self.name:
            self.close()
            self.bar, self.name = tqdm(total=total, desc=kind), kind
        self.bar.set_postfix_str(stage.removeprefix(kind).strip(" ()"))
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# generate ---------------------------------------------------------------------------------
def generate_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_decode_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt")
    src.add_argument("--prompts", help="file with one prompt per line; prints one JSON record per line")
    p.add_argument("--json", action="store_true", help="print the generation record as JSON")
    p.add_argument("--num-return-sequences", type=int, default=1,
                   help="sampling: N continuations of each prompt, with seeds SEED..SEED+N-1 (one JSON record each), "
                        "decoded as one batch unless --batch-size says otherwise")
    p.add_argument("--batch-size", type=int, default=None,
                   help="prompts (and samples) decoded at once; records still print in input order "
                        "(default: 1, or the N samples of --num-return-sequences)")


def tree_and_lookup(spec: str | None, heads_lookup: LookupConfig | None) -> tuple[tuple | None, LookupConfig | None]:
    """--tree: a tree file brings its own lookup (none if it records none); a preset or a JSON
    list keeps the heads' recommended one; no --tree is the heads' tree with its lookup."""
    if spec is None:
        return None, heads_lookup
    paths, file_lookup = resolve_tree_with_lookup(spec)
    return paths, (file_lookup if is_tree_file(spec) else heads_lookup)


def run_generate(args: argparse.Namespace) -> int:
    prompts = [args.prompt] if args.prompt is not None else read_prompt_file(args.prompts)
    if args.tree:
        resolve_tree_with_lookup(args.tree)  # a bad tree fails before the model loads
    if args.num_return_sequences < 1:
        raise ValueError(f"--num-return-sequences must be >= 1, got {args.num_return_sequences}")
    if args.num_return_sequences > 1 and args.temperature == 0:
        raise ValueError("--num-return-sequences > 1 needs sampling (--temperature > 0): greedy gives one answer")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    sampling_configs(args)  # bad settings fail before the model loads
    medusa = load_medusa(args.model, args.heads, args.device, args.dtype)
    tree, default_lookup = tree_and_lookup(args.tree, medusa.default_lookup)
    runs = [(p, args.seed + i) for p in prompts for i in range(args.num_return_sequences)]
    size = args.batch_size or args.num_return_sequences
    config = decode_config(args, default_lookup)
    for at in range(0, len(runs), size):
        batch = runs[at : at + size]
        records = generate_batch(medusa, [p for p, _ in batch], tree, config, seeds=[seed for _, seed in batch])
        for record in records:
            print_record(record, config, as_json=bool(args.json or args.prompts or len(runs) > 1))
    return 0


def print_record(record: GenerationRecord, config: DecodeConfig, as_json: bool) -> None:
    if as_json:
        print(json.dumps(record.to_json()), flush=True)
        return
    print(record.text)
    print(
        f"\n[{len(record.tokens)} tokens in {record.num_steps} steps: "
        f"{record.tokens_per_step:.2f} tokens/step, {record.tokens_per_second:.1f} tokens/s, "
        f"{len(record.tree)}-node tree{lookup_note(config.lookup)} on {record.device}]"
    )


def lookup_note(lookup: LookupConfig | None) -> str:
    return f" + {lookup.tokens}-token context lookup" if lookup else ""


# train-heads ------------------------------------------------------------------------------
def train_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p, heads=False)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", help="training prompts, one per line (their answers are generated first)")
    src.add_argument("--distilled", nargs="+", metavar="FOLDER", help="folders of distill chunks: train on those answers")
    p.add_argument("--train-only", nargs="+", default=(), metavar="FOLDER",
                   help="with --distilled: more chunk folders to train on but never validate on, e.g. ShareGPT's own "
                        "replies (scripts/make_sharegpt_reply_chunks.py)")
    p.add_argument("--out", required=True, help="heads folder to write (and resume from)")
    p.add_argument("--num-heads", type=int, default=4)
    p.add_argument("--num-layers", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=192, help="length of the self-distilled answers")
    p.add_argument("--gen-batch-size", type=int, default=48, help="prompts generated at once for the distillation text")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=50, help="steps between resumable checkpoints")
    p.add_argument(
        "--full-vocab", action="store_true", help="softmax over the whole vocabulary in the loss (default: the tokens the data uses; faster)"
    )
    p.add_argument("--loss", choices=("hard", "soft"), default="hard",
                   help="hard: the answer's next tokens; soft: KL to the base model's distribution (Medusa-2)")
    p.add_argument("--head-weight-decay", type=float, default=1.0, help="head k's loss weighs this^k (Medusa: 0.8)")
    p.add_argument("--proposal-vocab-size", type=int, default=None,
                   help="rank and propose only the N most frequent answer tokens (default: every token the data uses)")
    p.add_argument("--own-projection", action="store_true",
                   help="each head trains its own projection onto the proposal tokens, started from the lm_head's "
                        "rows (Medusa-1 trains a whole lm_head per head); default: share the frozen lm_head")
    p.add_argument("--init-heads", default=None,
                   help="continue training these heads (keeping their proposal vocabulary; added ResBlocks start "
                        "as the identity, an added own projection as the lm_head's rows)")
    p.add_argument("--root-token", action="store_true",
                   help="each head also reads the pending root token, the base model's own next token, which "
                        "decoding knows before the heads draft (as Hydra's and EAGLE's drafters do; not Medusa-1)")
    p.add_argument("--root-lr", type=float, default=None,
                   help="learning rate of the root-token input (default: --lr); higher than --lr when continuing")


def run_train(args: argparse.Namespace) -> int:
    from medusa_core.training.training import TrainConfig, train_heads

    config = TrainConfig(
        prompts=args.prompts or "",
        distilled=tuple(args.distilled or ()),
        train_only=tuple(args.train_only),
        out=args.out,
        num_heads=args.num_heads,
        num_layers=args.num_layers,
        max_new_tokens=args.max_new_tokens,
        gen_batch_size=args.gen_batch_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        full_vocab=args.full_vocab,
        loss=args.loss,
        head_weight_decay=args.head_weight_decay,
        proposal_vocab_size=args.proposal_vocab_size,
        own_projection=args.own_projection,
        init_heads=args.init_heads,
        root_token=args.root_token,
        root_lr=args.root_lr,
    )
    if config.prompts:
        read_prompt_file(config.prompts)  # fail on a bad file before loading the model
    base = load_base_model(args.model, args.device, args.dtype)
    bar = Bar()
    result = train_heads(base, config, bar)
    bar.close()
    acc, prop = result.accuracy, result.proposal_accuracy
    if result.resumed_from_step:
        print(f"resumed from step {result.resumed_from_step} of {result.steps}")
    print(f"heads saved to {config.out}; validation on {acc.samples} positions (full vocabulary | proposal vocabulary):")
    for k in range(len(acc.top1)):
        print(f"  head {k}: top-1 {acc.top1[k]:.3f}  top-5 {acc.top5[k]:.3f} | top-1 {prop.top1[k]:.3f}  top-5 {prop.top5[k]:.3f}")
    if result.proposal_accuracy_before is not None:
        before = result.proposal_accuracy_before
        print(f"the heads it started from, same rows (proposal vocabulary): top-1 "
              f"{' / '.join(f'{x:.3f}' for x in before.top1)}, top-5 {' / '.join(f'{x:.3f}' for x in before.top5)}")
    return 0


# distill ----------------------------------------------------------------------------------
def distill_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p, heads=False)
    p.add_argument("--prompts", required=True, help="prompts to answer, one per line")
    p.add_argument("--out", required=True, help="folder of chunk files to write (and resume from)")
    p.add_argument("--chunk-size", type=int, default=256, help="prompts per resumable chunk file")
    p.add_argument("--batch-size", type=int, default=48, help="prompts generated at once")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--target-tokens", type=int, default=None, help="stop once this many answer tokens are on disk")


def run_distill(args: argparse.Namespace) -> int:
    from medusa_core.training.distill_chunks import DistillConfig, distill

    config = DistillConfig(args.prompts, args.out, args.chunk_size, args.batch_size, args.max_new_tokens, args.target_tokens)
    read_prompt_file(config.prompts)  # fail on a bad file before loading the model
    base = load_base_model(args.model, args.device, args.dtype)
    with tqdm(desc="distill", unit="prompt") as bar:
        found = 0  # prompts answered by chunks already on disk: not counted in the rate and ETA

        def report(done: int, total: int, tokens: int, generated: bool) -> None:
            nonlocal found
            if not generated:
                found = done
                bar.reset(total=total - found)
            bar.set_postfix_str(f"{tokens:,} answer tokens, {found} prompts found on disk")
            bar.update(done - found - bar.n)

        tokens = distill(base, config, report)
    print(f"{tokens:,} answer tokens in {config.out}")
    return 0


# calibrate --------------------------------------------------------------------------------
def calibrate_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--prompts", required=True, help="calibration prompts, one per line")
    p.add_argument("--out", required=True, help="accuracy table to write (medusa-accuracy/1 JSON)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--top-k", type=int, default=10, help="ranks per head in the table")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="> 0: a table for exact sampling at this temperature (acceptance = the token's probability)")
    p.add_argument("--top-p", type=float, default=1.0, help="with --temperature: the sampling's nucleus mass")


def run_calibrate(args: argparse.Namespace) -> int:
    from optimizer.accuracy import save_accuracy_table

    from medusa_core.training.calibration import calibrate
    from medusa_core.training.sampling_calibration import calibrate_sampling

    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    sampling = SamplingConfig(args.temperature, args.top_p) if args.temperature > 0 else None
    prompts = read_prompt_file(args.prompts)
    medusa = load_medusa(args.model, args.heads, args.device, args.dtype)
    with tqdm(total=len(prompts), desc="calibrate") as bar:
        report = lambda done, _: bar.update(done - bar.n)  # noqa: E731
        if sampling is None:
            table = calibrate(medusa, prompts, args.max_new_tokens, args.top_k, report)
        else:
            table = calibrate_sampling(medusa, prompts, sampling, args.max_new_tokens, args.top_k, report)
    save_accuracy_table(table, args.out)
    print(f"{table.samples} positions from {len(prompts)} prompts -> {args.out}")
    for k, row in enumerate(table.acc):
        print(f"  head {k}: top-1 {row[0]:.3f}  top-5 {sum(row[:5]):.3f}")
    return 0


# bench ------------------------------------------------------------------------------------
def bench_args(p: argparse.ArgumentParser) -> None:
    from medusa_core.modeling.models import REPO_ROOT

    add_model_args(p)
    p.add_argument("--prompts", default=str(REPO_ROOT / "data" / "prompts" / "test.txt"), help="prompt file, one per line (default: the held-out test prompts)")
    p.add_argument("--num-prompts", type=int, default=20, help="use the first N prompts of the file")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--tree", action="append", default=[], metavar="NAME=SPEC",
                   help="a Medusa tree to run besides chain-<heads> and the heads' default tree: preset, tree file "
                   "(with the context lookup it records) or JSON list (repeatable)")
    p.add_argument("--prompt-lookup-tokens", default="10", help="draft lengths for prompt lookup, comma-separated (one method each)")
    p.add_argument("--draft-model", default=None, help="small draft model for transformers' assisted generation (else skipped)")
    p.add_argument("--warmup-tokens", type=int, default=16, help="tokens each method generates once before timing")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-chat", action="store_true", help="feed raw prompts even if the model has a chat template")
    p.add_argument("--out", default=None, help="write the results as JSON (medusa-bench/1)")
    p.add_argument("--markdown", default=None, help="write the results table as Markdown")
    p.add_argument("--methods", default=None, metavar="NAME,NAME,...",
                   help="run only these methods (names as in the table; hf-greedy always runs, as the baseline)")
    p.add_argument("--batch-sizes", default=None, metavar="B,B,...",
                   help="batched throughput instead: hf-greedy, the heads' default tree (with its lookup) and each "
                        "--tree, at each batch size (e.g. 1,2,4,8,16)")


def batch_sizes_option(spec: str) -> list[int]:
    try:
        sizes = [int(n) for n in spec.split(",") if n.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--batch-sizes must be comma-separated integers >= 1, got {spec!r}")
    return sizes


def run_bench(args: argparse.Namespace) -> int:
    import torch

    from medusa_core.bench.batching import run_batch_benchmark
    from medusa_core.bench.report import batch_table, markdown_table
    from medusa_core.bench.runner import (
        BenchConfig, default_methods, encode_prompts, max_tree_depth, medusa_method_name, parse_tree_option, run_benchmark,
        select_methods,
    )

    try:
        lookup = [int(n) for n in args.prompt_lookup_tokens.split(",") if n.strip()]
    except ValueError:
        lookup = []
    if not lookup or min(lookup) < 1:
        raise ValueError(f"--prompt-lookup-tokens must be comma-separated integers >= 1, got {args.prompt_lookup_tokens!r}")
    if args.num_prompts < 1:
        raise ValueError(f"--num-prompts must be >= 1, got {args.num_prompts}")
    config = BenchConfig(args.max_new_tokens, args.warmup_tokens)
    sizes = batch_sizes_option(args.batch_sizes) if args.batch_sizes else []
    trees = [parse_tree_option(spec) for spec in args.tree]
    prompts = read_prompt_file(args.prompts)[: args.num_prompts]
    if args.threads:
        torch.set_num_threads(args.threads)
    medusa = load_medusa(args.model, args.heads, args.device, args.dtype)
    draft = load_base_model(args.draft_model, args.device, args.dtype) if args.draft_model else None
    methods = default_methods(medusa, trees, lookup, draft)
    if sizes:  # batched throughput runs the default tree and the given trees only
        wanted = [medusa_method_name("default", medusa.default_lookup)]
        wanted += [medusa_method_name(name, tree_lookup) for name, _, tree_lookup in trees]
        methods = select_methods(methods, [n for n in wanted if n])
    if args.methods:  # then --methods narrows that further (a method batch mode lacks is refused, by name)
        methods = select_methods(methods, [n.strip() for n in args.methods.split(",") if n.strip()])
    ids = encode_prompts(medusa.base, prompts, args.max_new_tokens, max_tree_depth(methods), False if args.no_chat else None)
    for m in methods:
        if m.skip_reason:
            print(f"skipping {m.name}: {m.skip_reason}", flush=True)
    bar = Bar()
    if sizes:
        result = run_batch_benchmark(medusa, ids, methods, sizes, config, bar).to_json()
    else:
        result = run_benchmark(medusa, ids, methods, config, draft, bar).to_json()
    bar.close()
    table = batch_table(result) if sizes else markdown_table(result)
    print(table)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
        print(f"results -> {args.out}")
    if args.markdown:
        Path(args.markdown).write_text(table)
        print(f"table -> {args.markdown}")
    return 0


# evaluate ---------------------------------------------------------------------------------
def evaluate_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--prompts", required=True, help="prompts to evaluate on, one per line")
    p.add_argument("--num-prompts", type=int, default=None, help="use the first N prompts of the file")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--tree", action="append", default=[], metavar="NAME=SPEC",
                   help="a tree besides the heads' default and chain-<heads>: preset, tree file (with its lookup) or JSON list")
    p.add_argument("--lookup-tokens", type=int, default=8, help="context lookup for trees that bring none (0: none)")
    p.add_argument("--out", default=None, help="write the evaluation as JSON")


def run_evaluate(args: argparse.Namespace) -> int:
    from medusa_core.bench.evaluate import evaluate, markdown
    from medusa_core.bench.runner import encode_prompts, parse_tree_option
    from medusa_core.spec.trees import chain_tree

    prompts = read_prompt_file(args.prompts)[: args.num_prompts]
    extra = [parse_tree_option(spec) for spec in args.tree]
    medusa = load_medusa(args.model, args.heads, args.device, args.dtype)
    fallback = lookup_or_none(args.lookup_tokens)
    trees = [("default", medusa.default_tree, medusa.default_lookup or fallback),
             (f"chain-{medusa.num_heads}", chain_tree(medusa.num_heads), fallback)]
    trees += [(name, paths, lookup or fallback) for name, paths, lookup in extra]
    depth = max(max((len(p) for p in t[1]), default=0) for t in trees)
    ids = encode_prompts(medusa.base, prompts, args.max_new_tokens, max(depth, args.lookup_tokens))
    bar = Bar()
    result = evaluate(medusa, ids, trees, args.max_new_tokens, bar)
    bar.close()
    print(markdown(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result.to_json(), indent=1))
        print(f"evaluation -> {args.out}")
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "generate": (generate_args, run_generate),
    "train-heads": (train_args, run_train),
    "distill": (distill_args, run_distill),
    "calibrate": (calibrate_args, run_calibrate),
    "bench": (bench_args, run_bench),
    "evaluate": (evaluate_args, run_evaluate),
}
