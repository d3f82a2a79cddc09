"""Command line: ``python -m optimizer {search,exact,compare,export,profile,predict,tune} ...``."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import optuna
from tqdm import tqdm

from medusa_core.spec.lookup import LookupConfig, lookup_or_none
from medusa_core.spec.trees import TreeError, resolve_tree, resolve_tree_with_lookup, save_tree_file

from .accuracy import REFERENCE_PREFIX, REFERENCE_TABLES, AccuracyError, AccuracyTable, resolve_accuracy, with_geometric_tail
from .engines import ENGINES, EngineError
from .exact import ExactOptimum, exact_optimum, speed_optimum
from .expected_length import LENGTH_MODELS, LengthModelError, expected_length
from .formats import FORMATS, export_tree
from .predict import predict_setup
from .walk import walk_optimum
from .step_cost import measure_step_profile
from .profile import DEFAULT_SIZES, LatencyProfile, ProfileError, load_latency_profile, measure_latency_profile, save_latency_profile
from .measure import DecoderMeasurer, load_measurer
from .search import (
    DEFAULT_STORAGE,
    EXACT_OBJECTIVES,
    OBJECTIVES,
    CrossCheck,
    SearchConfig,
    SearchError,
    SearchProgress,
    SearchResult,
    cross_check,
    objective_names,
    open_storage,
    run_search,
)
from .space import TreeSpace
from .tune import (
    MAX_LOOKUP_TOKENS,
    TUNE_OBJECTIVES,
    Confirmed,
    TuneConfig,
    TuneError,
    TuneInputs,
    TuneProgress,
    TuneResult,
    TuneSpace,
    confirm_fastest,
    read_tuning_prompts,
    run_tune,
    save_tuned_tree,
    starting_setups,
)

DEFAULT_STEP_FACTORY = "medusa_core.bench.latency:make_decoder_step"
USER_ERRORS = (AccuracyError, TreeError, EngineError, SearchError, ProfileError, LengthModelError, TuneError)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_tree(
    path: str, tree: Sequence[tuple[int, ...]], fmt: str, table: AccuracyTable, meta: dict[str, Any], lookup: LookupConfig | None = None
) -> None:
    if fmt == "json":
        save_tree_file(path, tree, table.num_heads, table.top_k, meta, lookup)
    elif lookup is not None:
        raise SearchError(f"only the json format records a context lookup, not {fmt!r}")
    else:
        Path(path).write_text(export_tree(tree, fmt, table.num_heads) + "\n")


def _trials_bar(desc: str, enabled: bool, total: int) -> tuple[Callable[[int, str | None], None], Callable[[], None]]:
    """A tqdm bar of finished trials with the best so far: (update(done, best text or None), close)."""
    bar = tqdm(total=total, desc=desc, unit="trial", disable=not enabled, file=sys.stderr)

    def update(done: int, best: str | None) -> None:
        bar.n = done
        if best is not None:
            bar.set_postfix(best=best, refresh=False)
        bar.refresh()

    return update, bar.close


def _tqdm_progress(enabled: bool, total: int) -> tuple[Callable[[SearchProgress], None], Callable[[], None]]:
    update, close = _trials_bar("trials", enabled, total)

    def report(progress: SearchProgress) -> None:
        update(progress.completed, None if progress.best_value is None else f"{progress.best_value:.4f}")

    return report, close


def _profile_for(args: argparse.Namespace) -> LatencyProfile | None:
    return load_latency_profile(args.profile) if args.profile else None


def recorded_lookup(tokens: int, ngram: Sequence[int]) -> LookupConfig | None:
    try:
        return lookup_or_none(tokens, *ngram)
    except ValueError as err:
        raise SearchError(f"--lookup-tokens/--lookup-ngram: {err}") from err


def cmd_search(args: argparse.Namespace) -> None:
    """For objectives that optimizer.exact solves, the exact optimum is the answer and Optuna runs
    cold, as a checked cross-check; for length-vs-latency the search is the answer."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    lookup = recorded_lookup(args.lookup_tokens, args.lookup_ngram)
    table = resolve_accuracy(args.accuracy)
    exact_answer = args.objective in EXACT_OBJECTIVES
    config = SearchConfig(
        budget=args.budget,
        objective=args.objective,
        length_model=args.length_model,
        engine=args.engine,
        n_trials=args.trials,
        seed=args.seed,
        cold=args.cold or exact_answer,  # enqueuing the answer would check nothing
        storage=args.storage,
        study_name=args.study_name,
    )
    update, close = _tqdm_progress(not args.no_progress, args.trials)
    profile = _profile_for(args)
    try:
        result = run_search(table, config, profile, progress=update)
    finally:
        close()
    names = objective_names(args.objective)
    print(f"study {result.study.study_name} ({args.storage}): {len(result.study.trials)} trials")
    check = cross_check(result) if exact_answer else None
    tree, values, length = _print_search(result, names, check)
    if args.out:
        meta = {
            "source": "optimizer search",
            "answer": "exact optimum" if exact_answer else "Optuna search",
            "objective": args.objective,
            "objective_names": list(names),
            "objective_value": list(values) if len(values) > 1 else values[0],
            "expected_length": length,
            "length_model": result.length_model,
            "budget": args.budget,
            "engine": args.engine,
            "accuracy": args.accuracy,
            "accuracy_model": table.model,
            "exact_optimum_value": result.exact.value,
            "trials": len(result.study.trials),
            "study": result.study.study_name,
            "created": _now(),
        } | ({"batch_size": profile.batch_size} if profile and args.objective != "length" else {}) | (
            {"cross_check": asdict(check)} if check else {})
        _write_tree(args.out, tree, args.format, table, meta, lookup)
        print(f"wrote {args.out} ({args.format})")


def _print_search(
    result: SearchResult, names: Sequence[str], check: CrossCheck | None
) -> tuple[tuple[tuple[int, ...], ...], tuple[float, ...], float]:
    """Print the answer and, for an exact one, the cross-check; returns the answer's tree, objective
    values and expected length."""
    best, exact = result.best, result.exact
    found = (f"best tree: {len(best.tree)} nodes, {best.expected_length:.4f} tokens/step "
             f"({result.length_model} model), "
             + ", ".join(f"{name} {value:.6g}" for name, value in zip(names, best.values)))
    if check is None:
        print(found)
        if len(names) > 1:
            print(f"Pareto front ({len(result.pareto)} trees): nodes, {', '.join(names)}")
            for point in result.pareto:
                print(f"  {len(point.tree):4d}  " + "  ".join(f"{value:.6g}" for value in point.values))
        print(f"exact optimum of {names[0]}: {exact.value:.6g} with {len(exact.tree)} nodes; "
              f"best found = {best.values[0] / exact.value:.2%} of the exact optimum")
        return best.tree, best.values, best.expected_length
    values = (exact.value, float(len(exact.tree))) if len(names) > 1 else (exact.value,)
    print(f"answer: the exact optimum, {len(exact.tree)} nodes, {exact.expected_length:.4f} tokens/step "
          f"({exact.model} model), {names[0]} {exact.value:.6g}")
    reached = f"99% after {check.trials_to_99_percent} trials" if check.trials_to_99_percent else "99% not reached"
    print(f"Optuna cross-check (cold, {check.trials} trials, never above the exact optimum): {found}; "
          f"best found = {check.ratio:.2%} of the exact optimum, {reached}")
    if len(names) > 1:
        print("Pareto front: nodes, Optuna's tokens/step, exact tokens/step")
        for point in result.pareto:
            print(f"  {len(point.tree):4d}  {point.values[0]:.6g}  {exact.curve[len(point.tree)]:.6g}")
    return exact.tree, values, exact.expected_length


def _exact_for(args: argparse.Namespace, table: AccuracyTable, profile: LatencyProfile | None) -> ExactOptimum:
    if args.objective == "speed" and profile is None:
        raise ProfileError("--objective speed needs --profile")
    if args.length_model == "walk":
        if args.curve:
            raise LengthModelError("--curve needs a position-average length model, not the walk")
        found = walk_optimum(table, args.budget, profile if args.objective == "speed" else None, _exact_lookup(args),
                             args.engine)
        print(f"walk-consistent rounds: {found.rounds}")
        return ExactOptimum(found.tree, found.walk.tokens_per_step, found.value, args.objective, np.ones(1), "walk",
                            args.engine)
    if args.objective == "speed":
        return speed_optimum(table, profile, args.budget, args.length_model, args.engine, _exact_lookup(args))
    return exact_optimum(table, args.budget, args.length_model, args.engine, _exact_lookup(args))


def _exact_lookup(args: argparse.Namespace) -> LookupConfig | None:
    return recorded_lookup(args.lookup_tokens, args.lookup_ngram)


def cmd_exact(args: argparse.Namespace) -> None:
    """The exact optimum; with the speed objective and several profiles (one per batch size), the
    optimum for each batch size, written to OUT-b<B> beside --out."""
    table = resolve_accuracy(args.accuracy)
    profiles = [load_latency_profile(p) for p in args.profile or []] or [None]
    if len(profiles) > 1 and args.objective != "speed":
        raise ProfileError("several --profile files make sense with --objective speed only")
    batches = [p.batch_size if p else 1 for p in profiles]
    if len(set(batches)) != len(batches):
        raise ProfileError(f"the profiles must be of different batch sizes, got {batches}")
    outs = profile_paths(args.out, batches) if args.out else [None] * len(profiles)
    for profile, out in zip(profiles, outs):
        optimum = _exact_for(args, table, profile)
        rows = profile.batch_size if profile else 1
        batch = "" if profile is None else f", batch {rows} ({rows * optimum.value:.4g} tokens/s a batch)"
        kind = "walk-consistent" if optimum.model == "walk" else "exact"
        print(f"{kind} optimum ({optimum.objective}, {optimum.model} model, engine {optimum.engine}{batch}): "
              f"{len(optimum.tree)} nodes, {optimum.expected_length:.4f} tokens/step, value {optimum.value:.6g}")
        if args.curve:
            print("nodes  best tokens/step")
            for nodes, length in enumerate(optimum.curve):
                print(f"{nodes:5d}  {length:.4f}")
        if out:
            meta = {
                "source": "optimizer exact",
                "objective": optimum.objective,
                "objective_value": optimum.value,
                "expected_length": optimum.expected_length,
                "length_model": optimum.model,
                "budget": args.budget,
                "engine": args.engine,
                "accuracy": args.accuracy,
                "created": _now(),
            } | ({"batch_size": profile.batch_size} if profile and args.objective == "speed" else {})
            _write_tree(str(out), optimum.tree, args.format, table, meta, _exact_lookup(args))
            print(f"wrote {out} ({args.format})")


def cmd_compare(args: argparse.Namespace) -> None:
    table = resolve_accuracy(args.accuracy)
    tree = resolve_tree(args.tree)
    tables = [(f"{args.accuracy} (top_k {table.top_k})", table)]
    if args.tail_top_k > table.top_k:
        tables.append((f"{args.accuracy} + geometric tail to top_k {args.tail_top_k}", with_geometric_tail(table, args.tail_top_k)))
    width = max(len(label) for label, _ in tables)
    print(f"{'table':<{width}}  exact optimum ({args.budget} nodes)  {args.tree} ({len(tree)} nodes)  ratio")
    for label, candidate in tables:
        optimum = exact_optimum(candidate, args.budget, args.length_model)
        length = expected_length(tree, candidate, optimum.model)
        print(f"{label:<{width}}  {optimum.expected_length:>24.4f}  {length:>{len(args.tree) + 14}.4f}  "
              f"{length / optimum.expected_length:.2%}")
    print("figures: expected tokens per step = 1 + sum over nodes of the product of per-rank accuracies")


def cmd_export(args: argparse.Namespace) -> None:
    text = export_tree(resolve_tree(args.tree), args.format, args.num_heads)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)


def _load_factory(spec: str) -> Callable[..., tuple[Callable[[int], None], dict]]:
    module_name, _, function = spec.partition(":")
    if not function:
        raise ProfileError(f"--step-factory and --forward-factory must look like module:function, got {spec!r}")
    return getattr(importlib.import_module(module_name), function)


def profile_paths(out: str, batch_sizes: Sequence[int]) -> list[Path]:
    """One file per batch size: OUT itself for one size, else OUT-b<B> beside it."""
    path = Path(out)
    if len(batch_sizes) == 1:
        return [path]
    return [path.with_name(f"{path.stem}-b{b}{path.suffix}") for b in batch_sizes]


def parse_batch_sizes(spec: str | None) -> list[int]:
    try:
        sizes = [int(s) for s in spec.split(",") if s.strip()] if spec else [1]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ProfileError(f"--batch-sizes must be comma-separated integers >= 1, got {spec!r}")
    return sizes


def cmd_profile(args: argparse.Namespace) -> None:
    """Time the decoder's own step over many shapes (format 2), or with --forward-factory a
    custom forward(n) per token count (format 1)."""
    sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else DEFAULT_SIZES
    batch_sizes = parse_batch_sizes(args.batch_sizes)
    factory = _load_factory(args.forward_factory or args.step_factory)
    for batch, out in zip(batch_sizes, profile_paths(args.out, batch_sizes)):
        extra = {"batch_size": batch} if args.batch_sizes else {}  # custom factories need not know batches
        timed, info = factory(args.model, args.device, args.dtype, args.prefix_len, **extra)
        desc = f"batch {batch}: rounds over all " + ("sizes" if args.forward_factory else "step shapes")
        with tqdm(total=args.repeats, desc=desc, disable=args.no_progress, file=sys.stderr) as bar:
            tick = lambda done, total: bar.update(1)  # noqa: E731
            if args.forward_factory:
                profile = measure_latency_profile(timed, sizes, args.repeats, args.warmup, progress=tick, info=info)
            else:
                heads, top_k = int(info.pop("num_heads")), int(info.pop("top_k"))
                profile = measure_step_profile(timed, heads, top_k, sizes, args.repeats, args.warmup, tick, info)
        save_latency_profile(profile, out)
        print(f"{profile.model} on {profile.device} ({profile.dtype}), prefix {profile.prefix_len} tokens, "
              f"batch {profile.batch_size}:")
        if profile.has_step_model:
            print(f"  step = pass(tokens) + {profile.depth_seconds * 1000:.2f} ms per head computed + "
                  f"{profile.internal_seconds * 1000:.2f} ms per internal node + {profile.lookup_seconds * 1000:.2f} ms "
                  f"with a lookup (median fit error {profile.meta['fit_relative_error']:.1%})")
        for size, seconds in zip(profile.sizes, profile.pass_seconds or profile.seconds):
            print(f"  {size:4d} tokens  {seconds * 1000:8.2f} ms")
        print(f"wrote {out}")


def cmd_predict(args: argparse.Namespace) -> None:
    """Predicted tokens/step, seconds/step and tokens/s of a tree (and its lookup) from the cost model."""
    table = resolve_accuracy(args.accuracy)
    tree, lookup = resolve_tree_with_lookup(args.tree)
    if args.lookup_tokens is not None:
        lookup = recorded_lookup(args.lookup_tokens, args.lookup_ngram)
    profile = _profile_for(args)
    prediction = predict_setup(table, profile, tree, lookup, args.length_model)
    where = f"lookup {lookup.tokens} tokens, {lookup.min_ngram}-{lookup.max_ngram}-grams" if lookup else "no lookup"
    line = f"{len(tree)} nodes, {where}: {prediction.tokens_per_step:.4f} tokens/step ({prediction.length_model})"
    if prediction.seconds_per_step is not None:
        line += f", {prediction.seconds_per_step * 1000:.2f} ms/step, {prediction.tokens_per_second:.2f} tokens/s"
    print(line)



def _tune_progress(enabled: bool, total: int) -> tuple[Callable[[TuneProgress], None], Callable[[], None]]:
    update, close = _trials_bar("tune", enabled, total)

    def report(progress: TuneProgress) -> None:
        best = progress.best_tokens_per_second
        update(progress.finished, None if best is None else f"{best:.2f} tok/s")

    return report, close


def worker_argv(args: argparse.Namespace, index: int) -> list[str]:
    """The command line of extra worker ``index`` (1-based): the same study, no output file, and
    the next seed so that workers do not sample alike; only this process confirms the result."""
    argv = [sys.executable, "-m", "optimizer", "tune", "--prompts", args.prompts, "--trials", str(args.trials),
            "--max-new-tokens", str(args.max_new_tokens), "--budget", str(args.budget), "--storage", args.storage,
            "--objective", args.objective, "--top-k", str(args.top_k),
            "--heartbeat", str(args.heartbeat), "--device", args.device, "--dtype", args.dtype,
            "--workers", "1", "--confirm", "0", "--no-progress"]
    argv += ["--model", args.model] if args.model else []
    argv += ["--heads", args.heads] if args.heads else []
    argv += ["--study-name", args.study_name] if args.study_name else []  # else derived alike by every worker
    argv += ["--num-prompts", str(args.num_prompts)] if args.num_prompts else []
    argv += ["--seed", str(args.seed + index)] if args.seed is not None else []
    return argv


def _portable_name(name: str) -> str:
    """A local folder by its own name: workers on other machines keep it under other paths."""
    return Path(name).name if Path(name).is_dir() else name


def _tune_inputs(args: argparse.Namespace, measurer: DecoderMeasurer, prompts: Sequence[str]) -> TuneInputs:
    medusa = measurer.medusa
    return TuneInputs(_portable_name(medusa.base.model_id), _portable_name(medusa.heads_name), tuple(prompts),
                      args.max_new_tokens)


def _print_tune(result: TuneResult, objective: str) -> None:
    best = result.best
    lookup = best.setup.lookup
    print(f"study {result.study_name}: {result.finished} finished trials")
    print(f"fastest setup (trial {best.number}, {best.worker}): {len(best.setup.tree)} nodes, lookup "
          f"{f'{lookup.tokens} tokens, {lookup.min_ngram}-{lookup.max_ngram}-grams' if lookup else 'off'}: "
          f"{best.tokens_per_second:.2f} tokens/s, {best.tokens_per_step:.3f} tokens/step")
    if objective == "pareto":
        print(f"Pareto front ({len(result.front)} setups): nodes, tokens/s, tokens/step, lookup tokens")
        for point in result.front:
            tokens = point.setup.lookup.tokens if point.setup.lookup else 0
            print(f"  {len(point.setup.tree):4d}  {point.tokens_per_second:8.2f}  "
                  f"{point.tokens_per_step:6.3f}  {tokens:3d}")


def _confirm(args: argparse.Namespace, measurer: DecoderMeasurer, result: TuneResult) -> tuple[Confirmed, ...]:
    """Speed: the fastest few setups measured again in interleaved rounds; the fastest median wins."""
    if args.objective != "speed" or args.confirm == 0:
        return ()
    default = measurer.default_setup
    confirmed = confirm_fastest(measurer, result.study_name, args.storage, args.confirm, args.confirm_rounds, default)
    print(f"confirmed over {args.confirm_rounds} interleaved rounds: trial, its tokens/s, rounds' median (min-max)")
    for c in confirmed:
        note = "  the heads' default" if c.tuned.setup == default else ""
        print(f"  {c.tuned.number:5d}  {c.tuned.tokens_per_second:8.2f}  {c.tokens_per_second:8.2f} "
              f"({min(c.rounds):.2f}-{max(c.rounds):.2f}){note}")
    print(f"chosen: trial {confirmed[0].tuned.number}")
    return confirmed


def _tune_here(
    args: argparse.Namespace, config: TuneConfig, prompts: Sequence[str]
) -> tuple[DecoderMeasurer, TuneInputs, TuneResult]:
    """This process's worker: load the model, then run trials until the study is complete."""
    measurer = load_measurer(args.model, args.heads, args.device, args.dtype, prompts, args.max_new_tokens,
                             MAX_LOOKUP_TOKENS)
    space = TuneSpace(TreeSpace(args.top_k, measurer.num_heads, config.budget, sized=True))
    inputs = _tune_inputs(args, measurer, prompts)
    update, close = _tune_progress(not args.no_progress, config.n_trials)
    try:
        starting = starting_setups(space, measurer.default_setup, measurer.medusa.heads_folder)
        result = run_tune(measurer, space, config, inputs, starting, progress=update)
    finally:
        close()
    return measurer, inputs, result


def cmd_tune(args: argparse.Namespace) -> None:
    """Measured tuning; with --workers W, W-1 more processes join the same study."""
    config = TuneConfig(args.budget, args.trials, args.objective, args.storage, args.study_name, args.seed,
                        args.heartbeat)
    prompts = read_tuning_prompts(args.prompts, args.num_prompts)
    if args.workers < 1:
        raise TuneError(f"--workers must be >= 1, got {args.workers}")
    open_storage(config.storage)  # an unreachable storage fails now, before the model loads
    workers = [subprocess.Popen(worker_argv(args, i), stdout=subprocess.DEVNULL) for i in range(1, args.workers)]
    try:
        measurer, inputs, result = _tune_here(args, config, prompts)
    except BaseException:
        for worker in workers:  # they would only repeat this worker's error, or run on alone
            worker.terminate()
        raise
    failed = [w.args for w in workers if w.wait() != 0]
    if failed:
        raise TuneError(f"{len(failed)} of the extra workers failed (their errors are above)")
    _print_tune(result, args.objective)
    confirmed = _confirm(args, measurer, result)
    if args.out:
        save_tuned_tree(args.out, result, inputs, measurer.num_heads, args.top_k, objective=args.objective,
                        budget=args.budget, prompts=args.prompts, machine=measurer.machine(), confirmed=confirmed,
                        default=measurer.default_setup, created=_now())
        print(f"wrote {args.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m optimizer", description="Medusa tree-topology optimiser")
    commands = parser.add_subparsers(dest="command", required=True)
    accuracy_help = f"medusa-accuracy/1 JSON file or {', '.join(REFERENCE_PREFIX + n for n in REFERENCE_TABLES)}"

    def add_table_options(p: argparse.ArgumentParser, default_accuracy: str | None = None, walk: bool = False) -> None:
        p.add_argument("--accuracy", required=default_accuracy is None, default=default_accuracy, help=accuracy_help)
        p.add_argument("--length-model", default="auto", choices=("auto", *LENGTH_MODELS, *(("walk",) if walk else ())),
                       help="auto: empirical replay when the table has rank vectors, else independence"
                       + ("; walk: the decoding walk over the table's answers (segments needed)" if walk else ""))

    def add_output_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", help="write the tree here")
        p.add_argument("--format", default="json", choices=FORMATS, help="format of --out (json keeps meta)")

    search = commands.add_parser("search", help="Optuna search over tree shapes")
    add_table_options(search)
    search.add_argument("--budget", type=int, default=64, help="maximum tree nodes (root excluded)")
    search.add_argument("--objective", default="length", choices=OBJECTIVES)
    search.add_argument("--profile", help="medusa-latency file (objectives speed, length-vs-latency)")
    search.add_argument("--engine", default="none", choices=ENGINES)
    search.add_argument("--trials", type=int, default=300, help="complete trials the study should hold")
    search.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna storage URL (SQLite file, PostgreSQL, ...)")
    search.add_argument("--study-name", help="default: derived from the table and settings")
    search.add_argument("--cold", action="store_true", help="enqueue nothing: Optuna alone (length-vs-latency; the "
                        "other objectives' answer is the exact optimum and their search always runs cold, as a check)")
    search.add_argument("--seed", type=int, default=0)
    search.add_argument("--no-progress", action="store_true")
    search.add_argument("--lookup-tokens", type=int, default=0,
                        help="record a context-lookup chain of N tokens in the tree file, to verify beside the tree "
                        "(not searched: measure it with `python -m medusa_core bench`)")
    search.add_argument("--lookup-ngram", type=int, nargs=2, default=(2, 3), metavar=("MIN", "MAX"),
                        help="shortest and longest n-gram the recorded lookup matches")
    add_output_options(search)
    search.set_defaults(run=cmd_search)

    exact = commands.add_parser("exact", help="exact optimum tree and the E(N) curve")
    add_table_options(exact, walk=True)
    exact.add_argument("--budget", type=int, default=64)
    exact.add_argument("--objective", default="length", choices=("length", "speed"))
    exact.add_argument("--profile", nargs="+", help="medusa-latency file(s) (objective speed); one per batch size "
                       "gives a tree per batch size (OUT-b<B>.json)")
    exact.add_argument("--engine", default="none", choices=ENGINES)
    exact.add_argument("--curve", action="store_true", help="print the best tokens/step for every node count")
    exact.add_argument("--lookup-tokens", type=int, default=0,
                       help="score the tree together with a context lookup of N tokens (empirical replay; the table "
                       "must record lookup outcomes) and record it in the tree file")
    exact.add_argument("--lookup-ngram", type=int, nargs=2, default=(2, 3), metavar=("MIN", "MAX"))
    add_output_options(exact)
    exact.set_defaults(run=cmd_exact)

    compare = commands.add_parser("compare", help="exact optimum vs a given tree, side by side")
    add_table_options(compare, default_accuracy=REFERENCE_PREFIX + "vicuna-7b")
    compare.add_argument("--budget", type=int, default=63)
    compare.add_argument("--tree", default="mc_sim_7b_63", help="preset name, tree file or JSON list of paths")
    compare.add_argument("--tail-top-k", type=int, default=10,
                         help="also score with ranks extrapolated to this top_k (0: off)")
    compare.set_defaults(run=cmd_compare)

    export = commands.add_parser("export", help="convert a tree to a serving-engine format")
    export.add_argument("--tree", required=True, help="tree file, preset name or JSON list of paths")
    export.add_argument("--format", required=True, choices=FORMATS)
    export.add_argument("--num-heads", type=int, help="check depth against the number of heads")
    export.add_argument("--out", help="write here instead of printing")
    export.set_defaults(run=cmd_export)

    profile = commands.add_parser("profile", help="measure forward latency versus tree size")
    profile.add_argument("--model", help="base model id or folder (default: the embedded default model)")
    profile.add_argument("--device", default="auto")
    profile.add_argument("--dtype", default="auto")
    profile.add_argument("--prefix-len", type=int, default=200, help="tokens in the KV cache before the tree")
    profile.add_argument("--sizes", help=f"comma-separated token counts (default {','.join(map(str, DEFAULT_SIZES))})")
    profile.add_argument("--repeats", type=int, default=7)
    profile.add_argument("--warmup", type=int, default=2)
    profile.add_argument("--step-factory", default=DEFAULT_STEP_FACTORY,
                         help="module:function(model, device, dtype, prefix_len) -> (step(shape), info with num_heads "
                         "and top_k): the decoder's step, timed over many shapes (format medusa-latency/2)")
    profile.add_argument("--forward-factory", default=None,
                         help="instead: module:function(model, device, dtype, prefix_len) -> (forward(n), info), "
                         "timed per token count only (format medusa-latency/1)")
    profile.add_argument("--batch-sizes", default=None, metavar="B,B,...",
                         help="rows per pass, one profile each (OUT-b<B>.json when several; default: 1)")
    profile.add_argument("--no-progress", action="store_true")
    profile.add_argument("--out", required=True)
    profile.set_defaults(run=cmd_profile)

    predict = commands.add_parser("predict", help="predicted tokens/step and tokens/s of a tree (and lookup)")
    predict.add_argument("--accuracy", required=True, help="medusa-accuracy/1 file (with lookups and segments: the "
                         "decoding walk) or reference:NAME")
    predict.add_argument("--tree", required=True, help="tree file (its lookup too), preset name or JSON list of paths")
    predict.add_argument("--profile", help="medusa-latency file: adds seconds/step and tokens/s")
    predict.add_argument("--length-model", default="auto", choices=("auto", "walk", "empirical", "independence"))
    predict.add_argument("--lookup-tokens", type=int, default=None, help="override the tree file's lookup (0: off)")
    predict.add_argument("--lookup-ngram", type=int, nargs=2, default=(2, 3), metavar=("MIN", "MAX"))
    predict.set_defaults(run=cmd_predict)

    tune = commands.add_parser("tune", help="tune tree and context lookup by measuring the real decoder (Optuna)")
    tune.add_argument("--model", help="base model id or folder (default: the embedded default model), or "
                      "module:function returning a MedusaModel")
    tune.add_argument("--heads", help="heads folder, Hub id or random (default: the shipped heads)")
    tune.add_argument("--device", default="auto")
    tune.add_argument("--dtype", default="auto")
    tune.add_argument("--prompts", required=True, help="tuning prompts, one per line (the pruning steps)")
    tune.add_argument("--num-prompts", type=int, help="use the first N prompts only")
    tune.add_argument("--trials", type=int, default=50, help="finished trials the study should hold (all workers)")
    tune.add_argument("--max-new-tokens", type=int, default=64, help="tokens decoded per prompt")
    tune.add_argument("--budget", type=int, default=64, help="maximum tree nodes (root excluded)")
    tune.add_argument("--top-k", type=int, default=10, help="largest rank + 1 a tree node may use")
    tune.add_argument("--objective", default="speed", choices=TUNE_OBJECTIVES,
                      help="speed: tokens/s; pareto: tokens/s vs tree nodes")
    tune.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna RDB URL (SQLite file, postgresql://...)")
    tune.add_argument("--study-name", help="default: derived from model, heads, prompts and settings")
    tune.add_argument("--workers", type=int, default=1, help="worker processes on this machine (same study)")
    tune.add_argument("--heartbeat", type=int, default=10,
                      help="seconds between heartbeats; a trial silent for 3 is retried by another worker")
    tune.add_argument("--seed", type=int, help="sampler seed (default: random; extra workers get SEED+1, ...)")
    tune.add_argument("--confirm", type=int, default=3, metavar="K",
                      help="speed: measure the K fastest setups again in interleaved rounds and keep the fastest "
                      "median (0: keep the fastest trial)")
    tune.add_argument("--confirm-rounds", type=int, default=3, metavar="R", help="rounds of --confirm")
    tune.add_argument("--no-progress", action="store_true")
    tune.add_argument("--out", help="write the fastest setup here (tree file with its lookup and measured figures)")
    tune.set_defaults(run=cmd_tune)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
