"""Measured tuning: Optuna picks a whole decoding setup and the real decoder measures it.

A trial is a setup: the heads' tree (through :class:`optimizer.space.TreeSpace`, node count
included) and the context lookup (``lookup_tokens``, 0 = off, and its n-gram range). It decodes
the tuning prompts greedily and its value is the measured tokens per second over all of them
(``pareto``: also the tree's node count, minimised). The prompts are the pruning steps: after
each one the trial reports its tokens per second so far, and a trial in the slowest quarter of
the earlier trials at that prompt is pruned (single objective only: Optuna prunes no
multi-objective study).

Studies live in an Optuna RDB storage (SQLite file, PostgreSQL, ...), so many workers, on one
machine or many, can share one. ``n_trials`` is the number of *finished* (complete or pruned)
trials the study should hold. A worker sends a heartbeat while it measures; a trial whose worker
went silent for longer than the grace period is failed by the next worker that looks and retried
(Optuna's ``RetryHeartbeatStaleTrialCallback``), so a killed worker loses nothing: any worker,
or the same command run again, finishes the study. A worker stops only when the study holds its
trials; a trial created past the target by a race between workers is failed unmeasured.

This module is torch-free: the measuring is a :class:`Measurer` given by the caller
(:mod:`optimizer.measure` runs medusa_core's decoder).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import statistics
import time
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal, Protocol, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from medusa_core.spec.lookup import LookupConfig
from medusa_core.spec.trees import TreeError, load_tree_with_lookup, save_tree_file, validate_tree

from .accuracy import AccuracyTable, load_accuracy_table
from .exact import exact_optimum
from .walk import walk_optimum
from .search import DEFAULT_STORAGE, open_storage
from .space import TreeSpace

Path_ = tuple[int, ...]
TuneObjective = Literal["speed", "pareto"]
TUNE_OBJECTIVES: tuple[str, ...] = ("speed", "pareto")
TUNE_SPACE_VERSION = 1  # bump when a parameter's meaning changes: old studies are then refused
MAX_LOOKUP_TOKENS = 16
MAX_MIN_NGRAM = 3
MAX_NGRAM_SPAN = 2
SHIPPED_TREE_FILES = ("tree.json", "tree-length.json", "tree-speed.json")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class TuneError(ValueError):
    """Tuning input that cannot work; the message says which."""


class SurplusTrial(Exception):
    """A trial created after the study already had its trials (two workers raced for the last one)."""


@dataclass(frozen=True)
class Setup:
    """One decoding setup: the heads' tree and the context lookup verified beside it."""

    tree: tuple[Path_, ...]
    lookup: LookupConfig | None = None

    def to_json(self) -> dict[str, Any]:
        return {"paths": [list(p) for p in self.tree], "lookup": asdict(self.lookup) if self.lookup else None}


@dataclass(frozen=True)
class Measurement:
    tokens: int
    steps: int
    seconds: float

    def __add__(self, other: Measurement) -> Measurement:
        return Measurement(self.tokens + other.tokens, self.steps + other.steps, self.seconds + other.seconds)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_step(self) -> float:
        return self.tokens / max(1, self.steps)


class Measurer(Protocol):
    """Decodes tuning prompt ``prompt`` (0-based) with a setup and says how it went."""

    num_prompts: int

    def measure(self, setup: Setup, prompt: int) -> Measurement: ...


@dataclass(frozen=True)
class TuneSpace:
    """Trial parameters -> a setup (and back, for enqueuing): the tree space, then the lookup."""

    trees: TreeSpace
    max_lookup_tokens: int = MAX_LOOKUP_TOKENS

    def suggest(self, trial: optuna.Trial | optuna.trial.FixedTrial) -> Setup:
        tree = self.trees.suggest_tree(trial)
        tokens = trial.suggest_int("lookup_tokens", 0, self.max_lookup_tokens)
        if tokens == 0:
            return Setup(tree)
        min_ngram = trial.suggest_int("lookup_min_ngram", 1, MAX_MIN_NGRAM)
        span = trial.suggest_int("lookup_ngram_span", 0, MAX_NGRAM_SPAN)
        return Setup(tree, LookupConfig(tokens, min_ngram + span, min_ngram))

    def params_for(self, setup: Setup) -> dict[str, Any]:
        """Parameters that decode to exactly this setup; ValueError when it lies outside the space."""
        params = self.trees.params_for(setup.tree)
        lookup = setup.lookup
        if lookup is None:
            return params | {"lookup_tokens": 0}
        span = lookup.max_ngram - lookup.min_ngram
        if lookup.tokens > self.max_lookup_tokens or lookup.min_ngram > MAX_MIN_NGRAM or span > MAX_NGRAM_SPAN:
            raise ValueError(f"lookup {lookup} is outside the tuning space")
        return params | {"lookup_tokens": lookup.tokens, "lookup_min_ngram": lookup.min_ngram,
                         "lookup_ngram_span": span}

    def to_json(self) -> dict[str, Any]:
        return {"trees": asdict(self.trees), "max_lookup_tokens": self.max_lookup_tokens,
                "max_min_ngram": MAX_MIN_NGRAM, "max_ngram_span": MAX_NGRAM_SPAN}


@dataclass(frozen=True)
class TuneConfig:
    budget: int  # maximum tree nodes (root excluded)
    n_trials: int  # finished trials the study should hold
    objective: TuneObjective = "speed"
    storage: str = DEFAULT_STORAGE  # an Optuna RDB URL: workers share the study through it
    study_name: str | None = None  # default: derived from the inputs
    seed: int | None = None  # sampler seed; None: random (workers sharing one seed would sample alike)
    heartbeat: int = 10  # seconds between a worker's heartbeats; silent for 3 of them = dead

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise TuneError(f"--budget must be >= 1 tree node, got {self.budget}")
        if self.n_trials < 1:
            raise TuneError(f"--trials must be >= 1, got {self.n_trials}")
        if self.objective not in TUNE_OBJECTIVES:
            raise TuneError(f"unknown objective {self.objective!r}; use {', '.join(TUNE_OBJECTIVES)}")
        if self.heartbeat < 1:
            raise TuneError(f"--heartbeat must be >= 1 second, got {self.heartbeat}")


@dataclass(frozen=True)
class TuneInputs:
    """What the measurements depend on besides the setup; a study holds one set of them."""

    model: str
    heads: str
    prompts: tuple[str, ...]
    max_new_tokens: int

    def to_json(self) -> dict[str, Any]:
        digest = hashlib.sha1("\n".join(self.prompts).encode()).hexdigest()[:12]
        return {"model": self.model, "heads": self.heads, "prompts": len(self.prompts), "prompts_sha1": digest,
                "max_new_tokens": self.max_new_tokens}


@dataclass(frozen=True)
class TunedSetup:
    number: int
    setup: Setup
    tokens_per_second: float
    tokens_per_step: float
    worker: str


@dataclass(frozen=True)
class TuneProgress:
    finished: int  # finished trials in the study, all workers'
    total: int
    best_tokens_per_second: float | None


@dataclass(frozen=True)
class TuneResult:
    best: TunedSetup  # the fastest complete trial
    front: tuple[TunedSetup, ...]  # pareto: tokens/s vs nodes, by node count; speed: the best alone
    finished: int
    study_name: str


def read_tuning_prompts(path: str, limit: int | None = None) -> tuple[str, ...]:
    """One prompt a line, blank lines skipped; the first ``limit`` when given."""
    file = Path(path)
    if not file.is_file():
        raise TuneError(f"prompt file {path} does not exist")
    prompts = tuple(line.strip() for line in file.read_text().splitlines() if line.strip())
    if not prompts:
        raise TuneError(f"prompt file {path} has no prompts")
    if limit is not None and limit < 1:
        raise TuneError(f"--num-prompts must be >= 1, got {limit}")
    return prompts[:limit]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# starting setups ----------------------------------------------------------------------------
def shipped_setups(heads_folder: str | None) -> list[Setup]:
    """The trees shipped beside the heads, each with its recorded lookup."""
    if heads_folder is None:
        return []
    files = [Path(heads_folder) / name for name in SHIPPED_TREE_FILES]
    return [Setup(*load_tree_with_lookup(file)) for file in files if file.is_file()]


def exact_setups(table: AccuracyTable, budget: int, lookup: LookupConfig | None) -> list[Setup]:
    """The best tokens-per-step trees of the budget, then of 1, 2, 4, ... nodes (the speed
    optimum is one of these sizes for any latency curve), with the heads' default lookup: on the
    decoding walk with that lookup when the table records both, else the exact position average."""
    sizes = [budget] + [2**i for i in range(budget.bit_length()) if 2**i < budget]
    recorded = lookup is None or table.lookup_outcomes(lookup.min_ngram, lookup.max_ngram) is not None
    if table.has_ranks and table.segments and recorded:
        return [Setup(walk_optimum(table, n, lookup=lookup).tree, lookup) for n in sizes]
    return [Setup(exact_optimum(table, n, "auto").tree, lookup) for n in sizes]


def heads_accuracy(heads_folder: str | None) -> AccuracyTable | None:
    table = None if heads_folder is None else Path(heads_folder) / "accuracy.json"
    return load_accuracy_table(table) if table is not None and table.is_file() else None


def starting_setups(space: TuneSpace, default: Setup, heads_folder: str | None) -> list[Setup]:
    """What to measure first: the heads' default setup, the shipped trees, the exact optima of
    the heads' accuracy table; those outside the space are left out."""
    table = heads_accuracy(heads_folder)
    candidates = [default, *shipped_setups(heads_folder)]
    if table is not None and table.num_heads <= space.trees.max_depth:
        candidates += exact_setups(table, space.trees.budget, default.lookup)
    chosen: list[Setup] = []
    for setup in candidates:
        setup = Setup(validate_tree(setup.tree), setup.lookup)
        if setup.tree and setup not in chosen and _fits(space, setup):
            chosen.append(setup)
    return chosen


def _fits(space: TuneSpace, setup: Setup) -> bool:
    try:
        space.params_for(setup)
    except (ValueError, TreeError):
        return False
    return True


# the study ----------------------------------------------------------------------------------
def default_study_name(config: TuneConfig, inputs: TuneInputs) -> str:
    settings = json.dumps(inputs.to_json(), sort_keys=True).encode()
    model = inputs.model.replace("/", "_")
    return f"medusa-tune-{model}-{config.objective}-b{config.budget}-{hashlib.sha1(settings).hexdigest()[:10]}"


def _directions(objective: str) -> list[str]:
    return ["maximize"] if objective == "speed" else ["maximize", "minimize"]


def _study_settings(config: TuneConfig, space: TuneSpace, inputs: TuneInputs) -> dict[str, Any]:
    settings = {"objective": config.objective, "space": space.to_json(), "inputs": inputs.to_json()}
    return json.loads(json.dumps(settings))  # as the storage gives it back (lists, not tuples)


def open_tune_study(config: TuneConfig, space: TuneSpace, inputs: TuneInputs) -> tuple[optuna.Study, bool]:
    """Create the study (True) or join it (False) after checking it was made for the same search."""
    storage = open_storage(config.storage, heartbeat=config.heartbeat)
    name = config.study_name or default_study_name(config, inputs)
    sampler = optuna.samplers.TPESampler(seed=config.seed)
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.PercentilePruner(25.0, n_startup_trials=5, n_warmup_steps=1)
        if config.objective == "speed" else optuna.pruners.NopPruner()
    )
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=_directions(config.objective),
                                    sampler=sampler, pruner=pruner)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        created = False
    check_study(study, _study_settings(config, space, inputs), len(_directions(config.objective)))
    return study, created


def check_study(study: optuna.Study, settings: dict[str, Any], objectives: int) -> None:
    """Refuse a study of another space version, other settings or not made by this command."""
    version = study.user_attrs.get("tune_space_version")
    if version is None and study.get_trials(deepcopy=False, states=FINISHED):
        raise TuneError(f"study {study.study_name!r} was not made by `optimizer tune`; use another --study-name")
    if version is not None and version != TUNE_SPACE_VERSION:
        raise TuneError(f"study {study.study_name!r} was made with search-space version {version}, this optimizer's "
                        f"is {TUNE_SPACE_VERSION}; use another --study-name")
    if len(study.directions) != objectives:
        raise TuneError(f"study {study.study_name!r} has {len(study.directions)} objective(s), not {objectives}")
    stored = study.user_attrs.get("tune_settings")
    if stored is not None and stored != settings:
        differ = "; ".join(f"{key} {was!r}, here {now!r}" for key, was, now in differences(stored, settings))
        raise TuneError(f"study {study.study_name!r} was made for other settings ({differ}); use another --study-name")
    if version is None:  # the creator, or a worker that raced it: both write the same values
        study.set_user_attr("tune_space_version", TUNE_SPACE_VERSION)
        study.set_user_attr("tune_settings", settings)


def differences(stored: Any, wanted: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, stored value, wanted value) for every leaf that differs."""
    if isinstance(stored, dict) and isinstance(wanted, dict):
        return [d for key in sorted(stored.keys() | wanted.keys())
                for d in differences(stored.get(key), wanted.get(key), f"{prefix}{key}.")]
    return [] if stored == wanted else [(prefix.rstrip("."), stored, wanted)]


def enqueue_setups(study: optuna.Study, space: TuneSpace, setups: Sequence[Setup]) -> None:
    for setup in setups:
        study.enqueue_trial(space.params_for(setup), user_attrs={"enqueued": True}, skip_if_exists=True)


# the trial ----------------------------------------------------------------------------------
def check_quota(study: optuna.Study, number: int, n_trials: int) -> None:
    """Trial numbers are handed out under a lock, so "fewer than n_trials live trials before mine"
    is the same answer in every worker: the first n_trials live ones are the study's."""
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    ahead = sum(1 for t in study.get_trials(deepcopy=False, states=live) if t.number < number)
    if ahead >= n_trials:
        raise SurplusTrial(f"trial {number}: the study already has {n_trials} trials")


def _record(trial: optuna.Trial, total: Measurement, prompts: int) -> None:
    trial.set_user_attr("tokens_per_second", total.tokens_per_second)
    trial.set_user_attr("tokens_per_step", total.tokens_per_step)
    trial.set_user_attr("measured", {"tokens": total.tokens, "steps": total.steps, "seconds": total.seconds,
                                     "prompts": prompts})


def trial_objective(
    space: TuneSpace, measurer: Measurer, config: TuneConfig, worker: str
) -> Callable[[optuna.Trial], float | tuple[float, float]]:
    def evaluate(trial: optuna.Trial) -> float | tuple[float, float]:
        check_quota(trial.study, trial.number, config.n_trials)
        setup = space.suggest(trial)
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("setup", setup.to_json())
        trial.set_user_attr("nodes", len(setup.tree))
        total = Measurement(0, 0, 0.0)
        for prompt in range(measurer.num_prompts):
            total += measurer.measure(setup, prompt)
            if config.objective == "speed":
                trial.report(total.tokens_per_second, prompt)
                if trial.should_prune():
                    _record(trial, total, prompt + 1)
                    raise optuna.TrialPruned(f"{total.tokens_per_second:.2f} tokens/s after {prompt + 1} prompts")
        _record(trial, total, measurer.num_prompts)
        if config.objective == "speed":
            return total.tokens_per_second
        return total.tokens_per_second, float(len(setup.tree))

    return evaluate


# the worker ---------------------------------------------------------------------------------
def _count(study: optuna.Study, states: Sequence[TrialState]) -> int:
    return len(study.get_trials(deepcopy=False, states=tuple(states)))


def _progress(study: optuna.Study, n_trials: int) -> TuneProgress:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = max((t.values[0] for t in complete), default=None)
    return TuneProgress(_count(study, FINISHED), n_trials, best)


def run_tune(
    measurer: Measurer,
    space: TuneSpace,
    config: TuneConfig,
    inputs: TuneInputs,
    starting: Sequence[Setup] = (),
    progress: Callable[[TuneProgress], bool | None] | None = None,
    poll_seconds: float = 1.0,
) -> TuneResult:
    """Work on the study until it holds ``config.n_trials`` finished trials (other workers' count).

    ``starting`` setups are enqueued by the worker that creates the study. While the remaining
    trials are all running elsewhere this worker waits, so that it can retry one whose worker
    died. ``progress`` returning True stops this worker early.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study, created = open_tune_study(config, space, inputs)
    if created:
        enqueue_setups(study, space, starting)
    objective = trial_objective(space, measurer, config, worker_name())
    while _count(study, FINISHED) < config.n_trials:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        if _count(study, (*FINISHED, TrialState.RUNNING)) >= config.n_trials:
            time.sleep(poll_seconds)  # the last trials run elsewhere; wait in case one goes stale
            continue
        study.optimize(objective, n_trials=1, catch=(SurplusTrial,))
        if progress is not None and progress(_progress(study, config.n_trials)):
            break
    return tune_result(study)


def _tuned(trial: FrozenTrial) -> TunedSetup:
    setup = trial.user_attrs["setup"]
    lookup = LookupConfig(**setup["lookup"]) if setup["lookup"] else None
    return TunedSetup(
        number=trial.number,
        setup=Setup(tuple(tuple(p) for p in setup["paths"]), lookup),
        tokens_per_second=float(trial.user_attrs["tokens_per_second"]),
        tokens_per_step=float(trial.user_attrs["tokens_per_step"]),
        worker=str(trial.user_attrs["worker"]),
    )


def tune_result(study: optuna.Study) -> TuneResult:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise TuneError(f"study {study.study_name!r} has no complete trial yet")
    best = _tuned(max(complete, key=lambda t: t.values[0]))
    front = (best,)
    if len(study.directions) > 1:
        front = tuple(sorted(map(_tuned, study.best_trials), key=lambda t: (len(t.setup.tree), -t.tokens_per_second)))
    return TuneResult(best, front, _count(study, FINISHED), study.study_name)


@dataclass(frozen=True)
class Confirmed:
    """A setup measured again in rounds interleaved with the other candidates."""

    tuned: TunedSetup
    rounds: tuple[float, ...]  # tokens per second over all prompts, one per round

    @property
    def tokens_per_second(self) -> float:
        return statistics.median(self.rounds)


def measure_all(measurer: Measurer, setup: Setup) -> Measurement:
    total = Measurement(0, 0, 0.0)
    for prompt in range(measurer.num_prompts):
        total += measurer.measure(setup, prompt)
    return total


def confirm_fastest(measurer: Measurer, study_name: str, storage: str, candidates: int, rounds: int,
                    reference: Setup | None = None) -> tuple[Confirmed, ...]:
    """The ``candidates`` fastest distinct setups of the study, and ``reference`` (the heads' default)
    when the study measured it, measured again ``rounds`` times each, round by round, so that a
    machine's drift (other jobs, clocks) hits them alike; the fastest median first. One trial's
    figure is one sample of a noisy machine: the best of many samples is biased upwards, a median
    of interleaved rounds is not, and the reference is what the winner has to beat."""
    if candidates < 1 or rounds < 1:
        raise TuneError(f"--confirm needs candidates and rounds >= 1, got {candidates} and {rounds}")
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: -t.values[0])
    chosen: list[TunedSetup] = []
    for tuned in map(_tuned, complete):
        if tuned.setup not in [c.setup for c in chosen]:
            chosen.append(tuned)
        if len(chosen) == candidates:
            break
    if reference is not None and reference not in [c.setup for c in chosen]:
        chosen += [t for t in map(_tuned, complete) if t.setup == reference][:1]
    speeds: list[list[float]] = [[] for _ in chosen]
    for _ in range(rounds):
        for speed, tuned in zip(speeds, chosen):
            speed.append(measure_all(measurer, tuned.setup).tokens_per_second)
    confirmed = [Confirmed(tuned, tuple(speed)) for tuned, speed in zip(chosen, speeds)]
    return tuple(sorted(confirmed, key=lambda c: -c.tokens_per_second))


# the tree file ------------------------------------------------------------------------------
def save_tuned_tree(
    path: str | Path,
    result: TuneResult,
    inputs: TuneInputs,
    num_heads: int,
    top_k: int,
    *,
    objective: str,
    budget: int,
    prompts: str,
    machine: dict[str, Any],
    confirmed: Sequence[Confirmed] = (),
    default: Setup | None = None,
    created: str | None = None,
) -> TunedSetup:
    """Write the tuned winner (the confirmed fastest when ``confirmed``, else the fastest trial) as a
    tree file with its lookup and, in ``meta``, what it was measured on; returns the winner.

    ``prompts`` names where the tuning prompts came from (a file, or the app), ``default`` is the
    heads' default setup (flagged in the confirmation).
    """
    best = confirmed[0].tuned if confirmed else result.best
    meta: dict[str, Any] = {
        "source": "optimizer tune",
        "objective": objective,
        "measured_tokens_per_second": confirmed[0].tokens_per_second if confirmed else best.tokens_per_second,
        "measured_tokens_per_step": best.tokens_per_step,
        "prompts": prompts,
        "prompts_count": len(inputs.prompts),
        "max_new_tokens": inputs.max_new_tokens,
        "machine": machine,
        "measured_by": best.worker,
        "model": inputs.model,
        "heads": inputs.heads,
        "budget": budget,
        "trials": result.finished,
        "trial": best.number,
        "study": result.study_name,
        "created": created or datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if objective == "pareto":
        meta["pareto_front"] = [{"nodes": len(p.setup.tree), "tokens_per_second": p.tokens_per_second,
                                 "tokens_per_step": p.tokens_per_step, "trial": p.number} for p in result.front]
    if confirmed:
        meta["confirmation"] = [
            {"trial": c.tuned.number, "heads_default": c.tuned.setup == default,
             "trial_tokens_per_second": c.tuned.tokens_per_second,
             "rounds_tokens_per_second": list(c.rounds), "median_tokens_per_second": c.tokens_per_second}
            for c in confirmed]
    save_tree_file(path, best.setup.tree, num_heads, top_k, meta, best.setup.lookup)
    return best
