"""Optuna search over tree shapes, single- and multi-objective, resumable from any Optuna storage.

Objectives (``SearchConfig.objective``):

* ``length``: maximise the expected tokens per step of a tree of ``budget`` nodes;
* ``speed``: maximise predicted tokens per second = tokens per step / latency(nodes + 1);
* ``length-vs-nodes``: maximise tokens per step, minimise the node count (Pareto front);
* ``length-vs-latency``: maximise tokens per step, minimise the predicted latency of a step.

The search space is :class:`optimizer.space.TreeSpace`. Studies live in an Optuna storage: an
SQLite file by default, or any RDB URL (``postgresql://...``) so several workers on several
machines can share one study. ``n_trials`` is the number of *complete* trials the study should
hold: a killed run, started again with the same settings, loads the study and runs only the
missing trials (trials left "running" by the killed process are ignored).

For ``length``, ``speed`` and ``length-vs-nodes`` (``EXACT_OBJECTIVES``) :mod:`optimizer.exact`
gives the answer; the search there is a cross-check (:func:`cross_check`): Optuna may come close
to the exact optimum but never beat it, and a tree that did would be a bug in one of the two.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np
import optuna
import sqlalchemy
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from medusa_core.spec.trees import MC_SIM_7B_63, chain_tree, full_tree, validate_tree

from .accuracy import AccuracyTable
from .engines import Engine, check_engine, check_engine_budget
from .exact import ExactOptimum, exact_optimum, speed_optimum
from .expected_length import LengthModel, TreeScorer, resolve_length_model
from .profile import LatencyProfile
from .space import TreeSpace

Path_ = tuple[int, ...]
Objective = Literal["length", "speed", "length-vs-nodes", "length-vs-latency"]
OBJECTIVES: tuple[str, ...] = ("length", "speed", "length-vs-nodes", "length-vs-latency")
EXACT_OBJECTIVES: tuple[str, ...] = ("length", "speed", "length-vs-nodes")  # optimizer.exact solves these
DEFAULT_STORAGE = "sqlite:///medusa_optimizer.db"
SPACE_VERSION = 1


class SearchError(ValueError):
    """Search settings that cannot work together; the message says which."""


class ExactnessError(RuntimeError):
    """Optuna found a tree better than the exact optimum: a bug in the search or in the solver."""


@dataclass(frozen=True)
class SearchConfig:
    budget: int  # maximum number of tree nodes (root excluded)
    objective: Objective = "length"
    length_model: str = "auto"  # auto: empirical replay when the table has rank vectors
    engine: Engine = "none"
    n_trials: int = 300  # complete trials the study should hold
    seed: int = 0
    cold: bool = False  # True: enqueue nothing (Optuna alone); False: exact optimum + presets first
    storage: str | None = DEFAULT_STORAGE  # Optuna storage URL; None keeps the study in memory
    study_name: str | None = None  # default: derived from the table and these settings


@dataclass(frozen=True)
class SearchProgress:
    completed: int  # complete trials in the study (other workers' counted when this run started)
    total: int  # the n_trials target
    best_value: float | None  # best first objective so far


@dataclass(frozen=True)
class TreeTrial:
    number: int
    tree: tuple[Path_, ...]
    values: tuple[float, ...]
    expected_length: float


@dataclass(frozen=True)
class SearchResult:
    best: TreeTrial  # single objective: best trial; multi-objective: Pareto trial of largest length
    pareto: tuple[TreeTrial, ...]  # Pareto-optimal trees (first trial of each), by node count
    exact: ExactOptimum  # exact optimum of the first objective (see exact_reference)
    config: SearchConfig
    length_model: LengthModel
    study: optuna.Study = field(compare=False, repr=False)


def objective_names(objective: str) -> tuple[str, ...]:
    return {
        "length": ("tokens per step",),
        "speed": ("tokens per second",),
        "length-vs-nodes": ("tokens per step", "nodes"),
        "length-vs-latency": ("tokens per step", "seconds per step"),
    }[objective]


def _directions(objective: str) -> list[str]:
    return ["maximize"] if len(objective_names(objective)) == 1 else ["maximize", "minimize"]


def _check_config(config: SearchConfig, table: AccuracyTable, profile: LatencyProfile | None) -> LengthModel:
    if config.objective not in OBJECTIVES:
        raise SearchError(f"unknown objective {config.objective!r}; use {', '.join(OBJECTIVES)}")
    if config.objective in ("speed", "length-vs-latency") and profile is None:
        raise SearchError(f"objective {config.objective!r} needs a latency profile")
    if config.n_trials < 1:
        raise SearchError(f"n_trials must be >= 1, got {config.n_trials}")
    check_engine(config.engine)
    check_engine_budget(config.engine, config.budget)
    return resolve_length_model(table, config.length_model)


def tree_space(table: AccuracyTable, config: SearchConfig) -> TreeSpace:
    return TreeSpace(
        top_k=table.top_k,
        max_depth=table.num_heads,
        budget=config.budget,
        engine=config.engine,
        sized=config.objective != "length",
    )


def default_study_name(table: AccuracyTable, config: SearchConfig, profile: LatencyProfile | None) -> str:
    """Readable settings plus a digest of the table (and profile) so that different inputs never share a study."""
    digest = hashlib.sha1(json.dumps(table.to_json(), sort_keys=True).encode())
    if profile is not None and config.objective in ("speed", "length-vs-latency"):
        digest.update(json.dumps(profile.to_json(), sort_keys=True).encode())
    model = (table.model or "table").replace("/", "_")
    return (
        f"medusa-tree-{model}-{config.objective}-b{config.budget}-{config.engine}-"
        f"{resolve_length_model(table, config.length_model)}-{digest.hexdigest()[:10]}"
    )


def _study_settings(space: TreeSpace, config: SearchConfig, length_model: LengthModel) -> dict[str, Any]:
    return {
        "space_version": SPACE_VERSION,
        "space": asdict(space),
        "objective": config.objective,
        "length_model": length_model,
    }


def open_storage(url: str | None, heartbeat: int | None = None) -> optuna.storages.BaseStorage | None:
    """An Optuna RDB storage for the URL (None: in memory). SQLite files run in WAL mode with
    ``synchronous=NORMAL``: a commit no longer waits for the disk (each trial commits dozens of
    times), yet a killed process loses nothing that was committed.

    ``heartbeat`` (seconds): workers send heartbeats while a trial runs; a trial silent for three
    of them is failed by the next worker that looks and retried (up to 3 times) with its parameters.
    """
    if url is None:
        return None
    kwargs: dict[str, Any] = {}
    if heartbeat is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)
        kwargs = {"heartbeat_interval": heartbeat, "grace_period": 3 * heartbeat,
                  "heartbeat_stale_trial_callback": retry}
    storage = _connect(url, kwargs)
    if storage.engine.dialect.name == "sqlite":
        sqlalchemy.event.listen(storage.engine, "connect", _tune_sqlite)
        storage.engine.dispose()  # reconnect, so that every connection gets the pragmas
    return storage


def _connect(url: str, kwargs: dict[str, Any], attempts: int = 10) -> optuna.storages.RDBStorage:
    shown = _hide_password(url)
    attempt = 0
    while True:
        attempt += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Workers creating the tables of a new database at once: one wins, the others retry,
            # each after its own random wait, so that they do not collide again on the next table.
            if attempt == attempts:
                raise
            time.sleep(random.uniform(0.2, 1.0) * attempt)
        except sqlalchemy.exc.SQLAlchemyError as err:
            reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
            raise SearchError(f"cannot open the Optuna storage {shown}: {reason}") from err
        except ImportError as err:
            raise SearchError(f"no database driver for the storage {shown}: {err}") from err


def _hide_password(url: str) -> str:
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError as err:
        example = "sqlite:///study.db, postgresql://user@host/db"
        raise SearchError(f"{url!r} is not a storage URL (e.g. {example})") from err


def _tune_sqlite(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def open_study(
    table: AccuracyTable,
    config: SearchConfig,
    profile: LatencyProfile | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
) -> optuna.Study:
    """Create the study, or load it if it exists with the same settings (resume / extra workers)."""
    length_model = _check_config(config, table, profile)
    settings = _study_settings(tree_space(table, config), config, length_model)
    study = optuna.create_study(
        storage=open_storage(config.storage),
        study_name=config.study_name or default_study_name(table, config, profile),
        directions=_directions(config.objective),
        sampler=sampler or optuna.samplers.TPESampler(seed=config.seed),
        load_if_exists=True,
    )
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", settings)
    elif stored != json.loads(json.dumps(settings)):
        raise SearchError(
            f"study {study.study_name!r} exists with other settings ({stored}); use another study name"
        )
    return study


def exact_reference(
    table: AccuracyTable, config: SearchConfig, profile: LatencyProfile | None
) -> ExactOptimum:
    """The exact optimum of the search's first objective (tokens per second for ``speed``,
    tokens per step otherwise) within the budget and the engine's constraints."""
    length_model = resolve_length_model(table, config.length_model)
    if config.objective == "speed":
        assert profile is not None
        return speed_optimum(table, profile, config.budget, length_model, config.engine)
    return exact_optimum(table, config.budget, length_model, config.engine)


def starting_trees(
    table: AccuracyTable, config: SearchConfig, profile: LatencyProfile | None
) -> list[tuple[Path_, ...]]:
    """The exact optimum (for a Pareto front also the exact optima of 1, 2, 4, ... nodes and the
    fastest tree), then Medusa's presets that fit the space."""
    space = tree_space(table, config)
    length_model = resolve_length_model(table, config.length_model)
    optima = [exact_reference(table, config, profile).tree]
    if len(objective_names(config.objective)) > 1:
        sizes = sorted({min(2**i, config.budget) for i in range(config.budget.bit_length() + 1)})
        optima += [exact_optimum(table, n, length_model, config.engine).tree for n in sizes]
    if config.objective == "length-vs-latency":
        assert profile is not None
        optima.append(speed_optimum(table, profile, config.budget, length_model, config.engine).tree)
    depth = min(table.num_heads, config.budget)
    presets = [*optima, MC_SIM_7B_63, chain_tree(depth), full_tree(2, 2), full_tree(2, 3), full_tree(3, 2)]
    trees: list[tuple[Path_, ...]] = []
    for preset in presets:
        tree = validate_tree(preset)
        if tree and tree not in trees and _fits(space, tree):
            trees.append(tree)
    return trees


def _fits(space: TreeSpace, tree: tuple[Path_, ...]) -> bool:
    try:
        space.params_for(tree)
    except ValueError:
        return False
    return True


def _complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _tree_trial(trial: FrozenTrial) -> TreeTrial:
    return TreeTrial(
        number=trial.number,
        tree=tuple(tuple(p) for p in trial.user_attrs["paths"]),
        values=tuple(trial.values),
        expected_length=float(trial.user_attrs["expected_length"]),
    )


def _objective(
    space: TreeSpace, scorer: TreeScorer, objective: str, profile: LatencyProfile | None
) -> Callable[[optuna.Trial], float | tuple[float, float]]:
    def evaluate(trial: optuna.Trial) -> float | tuple[float, float]:
        tree = space.suggest_tree(trial)
        length = 1.0 + float(scorer.node_values(tree).sum())
        trial.set_user_attr("paths", [list(p) for p in tree])
        trial.set_user_attr("expected_length", length)
        if objective == "length":
            return length
        if objective == "length-vs-nodes":
            return length, float(len(tree))
        assert profile is not None
        seconds = profile.latency(len(tree) + 1)
        return length / seconds if objective == "speed" else (length, seconds)

    return evaluate


def run_search(
    table: AccuracyTable,
    config: SearchConfig,
    profile: LatencyProfile | None = None,
    progress: Callable[[SearchProgress], bool | None] | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
) -> SearchResult:
    """Run (or resume) the search until the study holds ``config.n_trials`` complete trials.

    ``progress`` is called after every trial; returning True stops the search early (a cancel
    button, or "stop at 99% of the exact optimum"). ``sampler`` defaults to a TPE sampler seeded
    with ``config.seed``.
    """
    length_model = _check_config(config, table, profile)
    space = tree_space(table, config)
    study = open_study(table, config, profile, sampler)
    done = _complete_trials(study)
    if not config.cold and not study.trials:
        for tree in starting_trees(table, config, profile):
            study.enqueue_trial(space.params_for(tree), skip_if_exists=True)
    counter = _ProgressCounter(len(done), config.n_trials, _best_first_value(done), progress)
    study.optimize(
        _objective(space, TreeScorer(table, length_model), config.objective, profile),
        n_trials=max(config.n_trials - len(done), 0),
        callbacks=[MaxTrialsCallback(config.n_trials, states=(TrialState.COMPLETE,)), counter],
    )
    return _result(study, table, config, profile, length_model)


def _best_first_value(trials: Sequence[FrozenTrial]) -> float | None:
    return max((t.values[0] for t in trials), default=None)


@dataclass
class _ProgressCounter:
    completed: int
    total: int
    best_value: float | None
    report: Callable[[SearchProgress], bool | None] | None

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            self.completed += 1
            first = trial.values[0]
            self.best_value = first if self.best_value is None else max(self.best_value, first)
        if self.report is not None and self.report(SearchProgress(self.completed, self.total, self.best_value)):
            study.stop()


def _result(
    study: optuna.Study,
    table: AccuracyTable,
    config: SearchConfig,
    profile: LatencyProfile | None,
    length_model: LengthModel,
) -> SearchResult:
    unique = {t.tree: t for t in map(_tree_trial, sorted(study.best_trials, key=lambda t: -t.number))}
    pareto = sorted(unique.values(), key=lambda t: (len(t.tree), -t.expected_length))
    if config.objective in ("length", "speed"):
        best = _tree_trial(study.best_trial)
    else:
        best = max(pareto, key=lambda t: (t.expected_length, -len(t.tree)))
    return SearchResult(best, tuple(pareto), exact_reference(table, config, profile), config, length_model, study)


def best_so_far(study: optuna.Study) -> np.ndarray:
    """Best first objective value after each complete trial, in trial order."""
    values = [t.values[0] for t in sorted(_complete_trials(study), key=lambda t: t.number)]
    return np.maximum.accumulate(np.array(values, dtype=np.float64)) if values else np.zeros(0)


def trials_to_reach(study: optuna.Study, target: float) -> int | None:
    """Number of complete trials after which the first objective first reached ``target``."""
    reached = np.flatnonzero(best_so_far(study) >= target)
    return int(reached[0]) + 1 if len(reached) else None


@dataclass(frozen=True)
class CrossCheck:
    """Optuna's search measured against the exact optimum of the same objective."""

    trials: int  # complete trials
    best_value: float  # Optuna's best first objective
    exact_value: float
    ratio: float  # best_value / exact_value, <= 1
    trials_to_99_percent: int | None  # complete trials until Optuna first reached 99% of the optimum


def cross_check(result: SearchResult, tolerance: float = 1e-9) -> CrossCheck:
    """Check Optuna against the exact answer: no tree (on a Pareto front: none of its size) may
    beat the exact optimum; raises :class:`ExactnessError` if one does."""
    if result.config.objective not in EXACT_OBJECTIVES:
        raise SearchError(f"objective {result.config.objective!r} has no exact optimum to check against")
    exact = result.exact
    for point in result.pareto if result.config.objective == "length-vs-nodes" else (result.best,):
        bound = exact.curve[len(point.tree)] if result.config.objective == "length-vs-nodes" else exact.value
        if point.values[0] > bound * (1 + tolerance):
            raise ExactnessError(f"Optuna's trial {point.number} ({len(point.tree)} nodes) scores "
                                 f"{point.values[0]:.9g}, "
                                 f"above the exact optimum {bound:.9g}")
    best = result.best.values[0]
    return CrossCheck(
        trials=len(_complete_trials(result.study)),
        best_value=best,
        exact_value=exact.value,
        ratio=best / exact.value,
        trials_to_99_percent=trials_to_reach(result.study, 0.99 * exact.value),
    )
