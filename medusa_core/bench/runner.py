"""Side-by-side speed benchmark: plain greedy, transformers' speculative decoding, our loop, Medusa.

All methods run in one process on the same model, dtype, device and threads, on the same prompt
token ids. After a warm-up of every method, prompts are run one after another and, for each
prompt, every method once, the starting method rotating from prompt to prompt (round-robin) so
that slow drift (thermal, other load) hits all methods alike. The first `hf-greedy` method is the
baseline: speed-ups are per prompt (method tokens/s over baseline tokens/s on the same prompt) and
"identical" means the same generated ids as the baseline. Figures are returned as values, never
printed or asserted here.
"""

from __future__ import annotations

import gc
import os
import platform
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import transformers

from medusa_core.modeling import default_model
from medusa_core.bench.methods import HF_ASSISTED, HF_GREEDY, HF_PROMPT_LOOKUP, MEDUSA, Method, Run, Runner, make_runner
from medusa_core.engine.precision import first_divergence, first_mismatch
from medusa_core.spec.lookup import LookupConfig
from medusa_core.accel.cpu_matmul import kernel_in_use, matmul_details
from medusa_core.modeling.models import REPO_ROOT, BaseModel, MedusaModel, encode_prompt
from medusa_core.spec.trees import Path_, chain_tree, is_tree_file, resolve_tree_with_lookup, tree_depth, validate_tree

BENCH_FORMAT = "medusa-bench/1"
BASELINE = HF_GREEDY
OURS_GREEDY = "ours-greedy"

Progress = Callable[[str, int, int], None]  # (stage, done, total), as cli.Bar takes it


@dataclass(frozen=True)
class BenchConfig:
    max_new_tokens: int = 128
    warmup_tokens: int = 16  # each method generates this many tokens once before timing
    max_matching_ngram: int = 2  # prompt lookup's n-gram size
    rotate: bool = True  # rotate the method order from prompt to prompt

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.warmup_tokens < 0:
            raise ValueError(f"warmup_tokens must be >= 0, got {self.warmup_tokens}")


# methods ----------------------------------------------------------------------------------
_NAME = re.compile(r"^[\w.+-]+$")


def parse_tree_option(spec: str) -> tuple[str, tuple[Path_, ...], LookupConfig | None]:
    """`NAME=SPEC` or `SPEC` (a preset, tree file or JSON list) -> (name, paths, the context
    lookup a tree file recommends)."""
    name, sep, rest = spec.partition("=")
    if sep and _NAME.match(name) and not Path(spec).is_file():
        return name, *resolve_tree_with_lookup(rest)
    if is_tree_file(spec):
        return Path(spec).stem, *resolve_tree_with_lookup(spec)
    return (spec if _NAME.match(spec) else "custom"), *resolve_tree_with_lookup(spec)


def is_default_model(base: BaseModel) -> bool:
    return base.model_id == default_model.HUB_ID


def draft_skip_reason(base: BaseModel) -> str:
    if is_default_model(base):
        return (
            f"no draft model: {default_model.DEFAULT_MODEL_NAME} is already the smallest model of its "
            "family (SmolLM2 135M/360M/1.7B), so no smaller model shares its tokenizer; pass --draft-model to run it"
        )
    return "no draft model given (pass --draft-model)"


def default_methods(
    medusa: MedusaModel,
    trees: Sequence[tuple] = (),
    prompt_lookup_tokens: Sequence[int] = (10,),
    draft: BaseModel | None = None,
) -> list[Method]:
    """hf-greedy (baseline), prompt lookup per draft length, assisted (or skipped), our plain loop,
    then Medusa with a chain over all heads, the heads' default tree and the given trees
    ((name, paths) or (name, paths, lookup)). With a default context lookup, our loop with that
    lookup alone and the default tree with it run too, so the table separates heads and lookup.
    A method equal to an earlier one becomes an alias of it rather than a second run."""
    methods = [Method(BASELINE, HF_GREEDY)]
    methods += [Method(f"{HF_PROMPT_LOOKUP}-{n}", HF_PROMPT_LOOKUP, draft_tokens=n) for n in prompt_lookup_tokens]
    methods.append(Method(HF_ASSISTED, HF_ASSISTED, skip_reason=None if draft else draft_skip_reason(medusa.base)))
    methods.append(Method(OURS_GREEDY, MEDUSA, tree=()))
    k, lookup = medusa.num_heads, medusa.default_lookup
    named = [("", (), lookup), (f"chain-{k}", chain_tree(k)), ("default", medusa.default_tree)]
    named += [("default", medusa.default_tree, lookup)] if lookup else []
    seen: dict[tuple, int] = {}
    for name, paths, *rest in [*named, *trees]:
        tree, tree_lookup = validate_tree(paths, k), (rest[0] if rest else None)
        method_name = medusa_method_name(name, tree_lookup)
        if method_name is None:
            continue
        key = (tree, tree_lookup)
        if key in seen:
            i = seen[key]
            if method_name != methods[i].name and method_name not in methods[i].aliases:
                old = methods[i]
                methods[i] = Method(old.name, MEDUSA, tree=tree, aliases=old.aliases + (method_name,), lookup=tree_lookup)
            continue
        if any(m.name == method_name for m in methods):
            raise ValueError(f"two different trees are named {name!r}")
        seen[key] = len(methods)
        methods.append(Method(method_name, MEDUSA, tree=tree, lookup=tree_lookup))
    return methods


def select_methods(methods: Sequence[Method], wanted: Sequence[str]) -> list[Method]:
    """The methods named (by name or alias) in `wanted`, in run order; hf-greedy always stays, as the baseline."""
    known = {n for m in methods for n in (m.name, *m.aliases)}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; this run has: {', '.join(m.name for m in methods)}")
    keep = {BASELINE, *wanted}
    return [m for m in methods if keep & {m.name, *m.aliases}]


def medusa_method_name(tree_name: str, lookup: LookupConfig | None) -> str | None:
    """medusa-NAME[+lookup-T]; our loop with a lookup and no heads is ours-lookup-T."""
    suffix = f"lookup-{lookup.tokens}" if lookup else ""
    if not tree_name:
        return f"ours-{suffix}" if lookup else None
    return f"medusa-{tree_name}" + (f"+{suffix}" if lookup else "")


# prompts ----------------------------------------------------------------------------------
def encode_prompts(base: BaseModel, prompts: Sequence[str], max_new_tokens: int, max_depth: int = 0, chat: bool | None = None) -> list[list[int]]:
    """Token ids for every prompt (chat template applied when the model has one); refuses a
    prompt that leaves no room in the context for the answer and a tree step."""
    if not prompts:
        raise ValueError("no prompts to benchmark")
    out = []
    for i, prompt in enumerate(prompts):
        ids = encode_prompt(base.tokenizer, prompt, chat)
        need = len(ids) + max_new_tokens + max_depth + 1
        if need > base.context_length:
            raise ValueError(
                f"prompt {i + 1} has {len(ids)} tokens; with {max_new_tokens} new tokens it needs {need} "
                f"positions but the model's context is {base.context_length}"
            )
        out.append(ids)
    return out


def max_tree_depth(methods: Sequence[Method]) -> int:
    return max((max(tree_depth(m.tree or ()), m.lookup.tokens if m.lookup else 0) for m in methods), default=0)


# machine ----------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device, dtype: torch.dtype = torch.float32) -> dict:
    cpu = cpu_model()
    cuda = device.type == "cuda"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu,
        "cuda": torch.version.cuda if cuda else None,
        "cpu_matmul_kernel": kernel_in_use() if device.type == "cpu" and dtype == torch.float32 else None,
        "cpu_matmul": matmul_details() if device.type == "cpu" and dtype == torch.float32 else None,  # the measured choice
    }


# statistics -------------------------------------------------------------------------------
def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default), q in [0, 1]."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def spread(values: Sequence[float], prefix: str) -> dict:
    return {
        f"{prefix}_median": statistics.median(values),
        f"{prefix}_min": min(values),
        f"{prefix}_max": max(values),
        f"{prefix}_p25": quantile(values, 0.25),
        f"{prefix}_p75": quantile(values, 0.75),
    }


def histogram(accepted: Sequence[int]) -> list[int]:
    """counts[n] = number of steps that accepted n drafted tokens (emitted n + 1)."""
    counts = [0] * (max(accepted, default=-1) + 1)
    for n in accepted:
        counts[n] += 1
    return counts


def repo_relative(spec: str) -> str:
    """Heads inside this repository are named by their path in it, so results read the same anywhere."""
    path = Path(spec).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) and path.exists() else spec


# results ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptRun:
    prompt: int  # index into the benchmark's prompts
    order: int  # position of this method in the prompt's round
    tokens: int
    seconds: float
    steps: int
    tokens_per_second: float
    speedup: float
    identical: bool
    first_mismatch: int | None


@dataclass
class MethodResult:
    name: str
    kind: str
    tree_nodes: int | None
    tree: list[list[int]] | None = None
    aliases: list[str] = field(default_factory=list)
    draft_tokens: int | None = None
    lookup_tokens: int = 0  # context-lookup chain verified beside the tree (counted in tree_nodes)
    skipped: bool = False
    skip_reason: str | None = None
    tokens_per_second_median: float | None = None
    tokens_per_second_min: float | None = None
    tokens_per_second_max: float | None = None
    tokens_per_second_p25: float | None = None
    tokens_per_second_p75: float | None = None
    speedup_median: float | None = None
    speedup_min: float | None = None
    speedup_max: float | None = None
    speedup_p25: float | None = None
    speedup_p75: float | None = None
    tokens_per_step: float | None = None
    seconds_per_step: float | None = None  # wall time per verification step (the cost of a tree pass)
    # seconds_per_step over the baseline's (the cost of a step in plain-token steps); speed-up is
    # about tokens_per_step / relative_step_cost, which says whether acceptance or cost limits it
    relative_step_cost: float | None = None
    acceptance_histogram: list[int] | None = None
    identical_fraction: float | None = None
    # of the prompts whose output differs from the baseline's, how many first differ where the
    # baseline's top-2 logits were within rounding (expected in bf16/fp16, never in fp32)
    near_tie_mismatches: int | None = None
    total_tokens: int | None = None
    total_seconds: float | None = None
    total_steps: int | None = None
    # our loop's methods, prompt by prompt against the fastest prompt lookup (BenchResult.prompt_lookup):
    # tokens/s over its tokens/s on the same prompt, and on how many prompts that is > 1
    over_prompt_lookup_median: float | None = None
    over_prompt_lookup_min: float | None = None
    over_prompt_lookup_max: float | None = None
    prompts_faster_than_prompt_lookup: int | None = None
    prompts_compared_with_prompt_lookup: int | None = None
    runs: list[PromptRun] = field(default_factory=list)
    # batched runs (bench --batch-sizes): prompts decoded this many at once; throughput is all new
    # tokens over all seconds, throughput_speedup its ratio to hf-greedy's at the same batch size,
    # row_seconds_median the median time from a batch's start to a row's last token
    batch_size: int = 1
    throughput: float | None = None
    throughput_speedup: float | None = None
    row_seconds_median: float | None = None


@dataclass
class BenchResult:
    machine: dict
    model: str
    heads: str
    device: str
    dtype: str
    max_new_tokens: int
    prompts: int
    settings: dict
    methods: list[MethodResult]
    prompt_lookup: str | None = None  # the prompt-lookup method our loop's methods are compared with
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    format: str = BENCH_FORMAT

    def method(self, name: str, batch_size: int = 1) -> MethodResult:
        for m in self.methods:
            if (m.name == name or name in m.aliases) and m.batch_size == batch_size:
                return m
        raise KeyError(name)

    def to_json(self) -> dict:
        return asdict(self)


def summarise(
    method: Method, runs: Sequence[Run], baseline: Sequence[Run], orders: Sequence[int], near_tie: Callable[[int, Run, Run], bool]
) -> MethodResult:
    result = MethodResult(
        method.name,
        method.kind,
        method.tree_nodes,
        [list(p) for p in method.tree] if method.tree is not None else None,
        list(method.aliases),
        method.draft_tokens,
        method.lookup.tokens if method.lookup else 0,
    )
    if method.skip_reason is not None:
        result.skipped, result.skip_reason = True, method.skip_reason
        return result
    tps = [r.tokens_per_second for r in runs]
    speedups = [r.tokens_per_second / b.tokens_per_second if b.tokens_per_second > 0 else 0.0 for r, b in zip(runs, baseline)]
    mismatches = [first_mismatch(r.tokens, b.tokens) for r, b in zip(runs, baseline)]
    for key, value in (spread(tps, "tokens_per_second") | spread(speedups, "speedup")).items():
        setattr(result, key, value)
    result.total_tokens = sum(len(r.tokens) for r in runs)
    result.total_seconds = sum(r.seconds for r in runs)
    result.total_steps = sum(r.steps for r in runs)
    result.tokens_per_step = result.total_tokens / max(1, result.total_steps)
    result.seconds_per_step = result.total_seconds / max(1, result.total_steps)
    base_step = sum(b.seconds for b in baseline) / max(1, sum(b.steps for b in baseline))
    result.relative_step_cost = result.seconds_per_step / base_step if base_step > 0 else None
    result.acceptance_histogram = histogram([a for r in runs for a in r.accepted])
    result.identical_fraction = sum(m is None for m in mismatches) / len(runs)
    result.near_tie_mismatches = sum(near_tie(p, r, b) for p, (r, b, m) in enumerate(zip(runs, baseline, mismatches)) if m is not None)
    result.runs = [
        PromptRun(p, orders[p], len(r.tokens), r.seconds, r.steps, r.tokens_per_second, s, m is None, m)
        for p, (r, s, m) in enumerate(zip(runs, speedups, mismatches))
    ]
    return result


def compare_with_prompt_lookup(methods: Sequence[MethodResult]) -> str | None:
    """Pair our loop's methods with the fastest prompt lookup (median tokens/s), prompt by prompt;
    returns that method's name (None without one)."""
    lookups = [m for m in methods if m.kind == HF_PROMPT_LOOKUP and not m.skipped and m.runs]
    if not lookups:
        return None
    reference = max(lookups, key=lambda m: m.tokens_per_second_median or 0.0)
    for m in methods:
        if m.kind != MEDUSA or m.skipped or not m.runs:
            continue
        ratios = [r.tokens_per_second / b.tokens_per_second for r, b in zip(m.runs, reference.runs) if b.tokens_per_second > 0]
        if not ratios:
            continue
        m.over_prompt_lookup_median = statistics.median(ratios)
        m.over_prompt_lookup_min, m.over_prompt_lookup_max = min(ratios), max(ratios)
        m.prompts_faster_than_prompt_lookup = sum(ratio > 1 for ratio in ratios)
        m.prompts_compared_with_prompt_lookup = len(ratios)
    return reference.name


# the benchmark ----------------------------------------------------------------------------
def run_benchmark(
    medusa: MedusaModel,
    prompt_ids: Sequence[Sequence[int]],
    methods: Sequence[Method],
    config: BenchConfig = BenchConfig(),
    draft: BaseModel | None = None,
    progress: Progress | None = None,
) -> BenchResult:
    """Warm every method up, then time them round-robin over the prompts; see the module doc."""
    if not prompt_ids:
        raise ValueError("no prompts to benchmark")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    active = [m for m in methods if m.skip_reason is None]
    if not active or active[0].kind != HF_GREEDY:
        raise ValueError(f"the first method to run must be the {HF_GREEDY} baseline")
    report = progress or (lambda stage, done, total: None)
    runners = {m.name: make_runner(m, medusa, draft, config.max_matching_ngram) for m in active}

    if config.warmup_tokens:
        for i, m in enumerate(active):
            report(f"warm-up ({m.name})", i, len(active))
            runners[m.name](prompt_ids[0], config.warmup_tokens)
        report("warm-up", len(active), len(active))

    # Collect once and freeze what survives (the models, the libraries) so that the collection
    # before each round, outside the timings, only walks the garbage of the last round.
    gc.collect()
    gc.freeze()
    try:
        runs, orders = _timed_rounds(runners, active, prompt_ids, config, report)
    finally:
        gc.unfreeze()

    baseline = runs[active[0].name]
    base = medusa.base

    def near_tie(prompt: int, run: Run, reference: Run) -> bool:
        divergence = first_divergence(base, prompt_ids[prompt], run.tokens, reference.tokens)
        return divergence is not None and divergence.near_tie

    results = [summarise(m, runs.get(m.name, []), baseline, orders.get(m.name, []), near_tie) for m in methods]
    settings = {"baseline": active[0].name, "draft_model": draft.model_id if draft else None}
    result = bench_result(medusa, config, len(prompt_ids), settings, results)
    result.prompt_lookup = compare_with_prompt_lookup(results)
    return result


def bench_result(
    medusa: MedusaModel, config: BenchConfig, prompts: int, settings: dict, methods: list[MethodResult]
) -> BenchResult:
    """The results with what they were measured on: machine, model, heads, dtype, settings."""
    base = medusa.base
    return BenchResult(
        machine=machine_info(base.device, base.dtype),
        model=base.model_id,
        heads=repo_relative(medusa.heads_name),
        device=str(base.device),
        dtype=str(base.dtype).removeprefix("torch."),
        max_new_tokens=config.max_new_tokens,
        prompts=prompts,
        settings=asdict(config) | settings,
        methods=methods,
    )


def _timed_rounds(
    runners: dict[str, Runner], active: Sequence[Method], prompt_ids: Sequence[Sequence[int]], config: BenchConfig, report: Progress
) -> tuple[dict[str, list[Run]], dict[str, list[int]]]:
    """One round per prompt, every method once, the first method rotating from round to round."""
    runs: dict[str, list[Run]] = {m.name: [] for m in active}
    orders: dict[str, list[int]] = {m.name: [] for m in active}
    total, done = len(prompt_ids) * len(active), 0
    for p, ids in enumerate(prompt_ids):
        shift = p % len(active) if config.rotate else 0
        round_ = list(active[shift:]) + list(active[:shift])
        gc.collect()
        for position, m in enumerate(round_):
            report(f"bench (prompt {p + 1}/{len(prompt_ids)}, {m.name})", done, total)
            runs[m.name].append(runners[m.name](ids, config.max_new_tokens))
            orders[m.name].append(position)
            done += 1
    report("bench", done, total)
    return runs, orders
