"""Optimise tab, measured tuning: Optuna picks whole decoding setups (the heads' tree and the context
lookup) and the real decoder measures each on the loaded model, as `python -m optimizer tune` does.

The study runs on a worker thread in its own temporary SQLite file (no two runs share one); after every
trial the page gets the history, the Pareto plot and the best setups with their predicted speed beside
the measured one. Stop ends the run after the prompt being decoded.
"""

from __future__ import annotations

import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import optuna
from optuna.trial import FrozenTrial, TrialState

from medusa_core import LookupConfig, MedusaModel
from medusa_core.bench.runner import encode_prompts
from optimizer import (
    MAX_LOOKUP_TOKENS,
    TUNE_OBJECTIVES,
    AccuracyTable,
    DecoderMeasurer,
    LatencyProfile,
    Measurement,
    Prediction,
    Setup,
    TuneConfig,
    TuneError,
    TuneInputs,
    TuneProgress,
    TuneResult,
    TuneSpace,
    TreeSpace,
    predict_setup,
    run_tune,
    save_tuned_tree,
    starting_setups,
    tune_result,
)

from . import tune_figures
from .heads_tab import shipped_table
from .inputs import InputError, shown_in_page, write_download
from .runs import RunControl
from .runtime import MAX_PROMPT_CHARS, gpu_task
from .store import ModelKey, ModelStore
from .tune_figures import TrialPoint, lookup_text

CALIBRATION_FILE = Path(__file__).resolve().parents[1] / "data" / "prompts" / "sharegpt-calibration.txt"
EXAMPLE_LINES = (1, 2, 4, 5)  # short prompts of the calibration set (never the test set)
MAX_TUNE_PROMPTS = 16
MAX_TRIALS = 500
MAX_BUDGET = 128
MAX_TUNE_TOKENS = 256
TOP_K = 10  # the largest rank + 1 a tree node may use, as `optimizer tune --top-k` by default
BEST_ROWS = 5
STUDY_NAME = "medusa-explorer-tune"
SOURCE = "medusa-explorer Optimise tab (measured tuning)"
OBJECTIVE_CHOICES = [("tokens per second", "speed"), ("Pareto: tokens per second vs tree nodes", "pareto")]
TABLE_HEADERS = ["trial", "tree nodes", "lookup", "measured tokens/s", "measured tokens/step", "predicted tokens/s",
                 "predicted tokens/step", "measured / predicted tokens/s", "measured / predicted tokens/step"]
NO_PROFILE = ("Predicted tokens/s needs the latency profile: open 'Latency profile of this device' above and "
              "press Measure (predicted tokens/step needs only the accuracy table).")
NO_TABLE = "No accuracy table for these heads (shipped, or calibrated in the Heads tab): nothing is predicted."
NOISE = ("One trial is one sample of a noisy machine and the best of many is biased upwards: "
         "`python -m optimizer tune --confirm 3` measures the fastest again in interleaved rounds.")


def example_prompts() -> str:
    """A few short calibration prompts, one a line ('' when the data folder is not there)."""
    if not CALIBRATION_FILE.is_file():
        return ""
    lines = [line.strip() for line in CALIBRATION_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return "\n".join(lines[i] for i in EXAMPLE_LINES if i < len(lines))


# inputs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TuneSettings:
    prompts: tuple[str, ...]
    trials: int
    budget: int
    max_new_tokens: int
    objective: str


def whole(value: float | None, what: str, low: int, high: int) -> int:
    if value is None or float(value) != int(float(value)):
        raise InputError(f"{what} must be a whole number, got {value}")
    number = int(float(value))
    if not low <= number <= high:
        raise InputError(f"{what} must be between {low} and {high}, got {number}")
    return number


def tuning_prompts(text: str | None) -> tuple[str, ...]:
    prompts = tuple(line.strip() for line in (text or "").splitlines() if line.strip())
    if not prompts:
        raise InputError("give at least one tuning prompt (one per line)")
    if len(prompts) > MAX_TUNE_PROMPTS:
        raise InputError(f"at most {MAX_TUNE_PROMPTS} tuning prompts, got {len(prompts)}")
    long = [i + 1 for i, p in enumerate(prompts) if len(p) > MAX_PROMPT_CHARS]
    if long:
        raise InputError(f"prompt {long[0]} is longer than {MAX_PROMPT_CHARS} characters")
    return prompts


def tune_settings(text: str | None, trials: float | None, budget: float | None, max_new_tokens: float | None,
                  objective: str) -> TuneSettings:
    """The run's settings, or an InputError in the page's words."""
    if objective not in TUNE_OBJECTIVES:
        raise InputError(f"unknown objective {objective!r}; use {' or '.join(TUNE_OBJECTIVES)}")
    return TuneSettings(tuning_prompts(text), whole(trials, "trials", 1, MAX_TRIALS),
                        whole(budget, "node budget", 1, MAX_BUDGET),
                        whole(max_new_tokens, "max new tokens", 1, MAX_TUNE_TOKENS), objective)


def decoder_measurer(medusa: MedusaModel, settings: TuneSettings) -> DecoderMeasurer:
    """The loaded model's decoder on the encoded prompts (a prompt leaving no room for the answer is refused)."""
    try:
        ids = encode_prompts(medusa.base, list(settings.prompts), settings.max_new_tokens,
                             max(medusa.num_heads, MAX_LOOKUP_TOKENS))
    except ValueError as err:
        raise InputError(str(err)) from err
    return DecoderMeasurer(medusa, settings.prompts, ids, settings.max_new_tokens)


# the run on its worker thread -----------------------------------------------------------------
class TuneStopped(Exception):
    """Stop was pressed (or the page went away): the trial being measured is dropped."""


@dataclass(frozen=True)
class PromptDone:
    prompt: int  # 1-based, within the running trial
    prompts: int


@dataclass(frozen=True)
class Snapshot:
    points: tuple[TrialPoint, ...]
    finished: int
    total: int


@dataclass(frozen=True)
class Outcome:
    points: tuple[TrialPoint, ...]
    result: TuneResult | None  # None: stopped before any trial was complete
    stopped: bool
    inputs: TuneInputs
    machine: dict[str, Any]
    seconds: float


@dataclass
class GuardedMeasurer:
    """The decoder measurer, checked for Stop and given its CPU share before each prompt."""

    inner: DecoderMeasurer
    should_stop: Callable[[], bool]
    share: Callable[[], object]
    post: Callable[[object], None]

    @property
    def num_prompts(self) -> int:
        return self.inner.num_prompts

    def measure(self, setup: Setup, prompt: int) -> Measurement:
        if self.should_stop():
            raise TuneStopped
        self.share()
        measured = self.inner.measure(setup, prompt)
        self.post(PromptDone(prompt + 1, self.num_prompts))
        return measured


def setup_from_json(data: dict[str, Any]) -> Setup:
    lookup = LookupConfig(**data["lookup"]) if data.get("lookup") else None
    return Setup(tuple(tuple(p) for p in data["paths"]), lookup)


def trial_points(trials: Sequence[FrozenTrial]) -> tuple[TrialPoint, ...]:
    """The finished trials that measured something, by number."""
    points = [TrialPoint(t.number, t.state == TrialState.PRUNED, setup_from_json(t.user_attrs["setup"]),
                         float(t.user_attrs["tokens_per_second"]), float(t.user_attrs["tokens_per_step"]))
              for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
              and "tokens_per_second" in t.user_attrs]
    return tuple(sorted(points, key=lambda p: p.number))


@dataclass
class StudyWatcher:
    """The worker's view of its own study (read from the storage run_tune writes)."""

    storage: str
    study: optuna.Study | None = field(default=None, init=False)

    def points(self) -> tuple[TrialPoint, ...]:
        if self.study is None:
            self.study = optuna.load_study(study_name=STUDY_NAME, storage=self.storage)
        return trial_points(self.study.get_trials(deepcopy=False))

    def result(self) -> TuneResult | None:
        try:
            return tune_result(self.study) if self.study is not None else None
        except TuneError:  # no complete trial yet
            return None


def tune_inputs(medusa: MedusaModel, settings: TuneSettings) -> TuneInputs:
    return TuneInputs(medusa.base.model_id, medusa.heads_name, settings.prompts, settings.max_new_tokens)


def tune_work(measurer: DecoderMeasurer, settings: TuneSettings, cpu_share: Callable[[], AbstractContextManager],
              should_stop: Callable[[], bool], post: Callable[[object], None]) -> Outcome:
    """run_tune on a fresh temporary study, posting PromptDone and Snapshot events; its Outcome."""
    start = time.perf_counter()
    medusa = measurer.medusa
    inputs = tune_inputs(medusa, settings)
    with tempfile.TemporaryDirectory(prefix="medusa-tune-") as folder, cpu_share() as share:
        storage = f"sqlite:///{Path(folder) / 'study.db'}"
        config = TuneConfig(settings.budget, settings.trials, settings.objective, storage, STUDY_NAME)
        space = TuneSpace(TreeSpace(TOP_K, measurer.num_heads, settings.budget, sized=True))
        starting = starting_setups(space, measurer.default_setup, medusa.heads_folder)
        watcher = StudyWatcher(storage)
        measurer.warm_up()

        def progress(state: TuneProgress) -> bool:
            post(Snapshot(watcher.points(), state.finished, state.total))
            return should_stop()

        guarded = GuardedMeasurer(measurer, should_stop, share, post)
        try:
            run_tune(guarded, space, config, inputs, starting, progress=progress)
        except TuneStopped:
            pass
        except TuneError as err:  # stopped before a complete trial, or input the checks above let through
            if not should_stop():
                raise InputError(str(err)) from err
        points = watcher.points()
        return Outcome(points, watcher.result(), should_stop(), inputs, measurer.machine(),
                       time.perf_counter() - start)


_END = object()


def thread_events(work: Callable[[Callable[[object], None]], object]) -> Iterator[object]:
    """Run ``work(post)`` on a worker thread; yield what it posts, then what it returns (its
    exception is raised here)."""
    items: queue.Queue = queue.Queue()
    outcome: list[tuple[bool, object]] = []

    def target() -> None:
        try:
            outcome.append((True, work(items.put)))
        except BaseException as err:  # handed to the page's thread
            outcome.append((False, err))
        finally:
            items.put(_END)

    threading.Thread(target=target, name="medusa-tune", daemon=True).start()
    while (item := items.get()) is not _END:
        yield item
    ok, value = outcome[0]
    if not ok:
        raise value  # type: ignore[misc]
    yield value


# the best setups, predicted against measured --------------------------------------------------
@dataclass(frozen=True)
class Predicted:
    """A setup's predicted figures; ``tree_only``: the table cannot score its lookup (``reason``), so
    the heads' tree alone is predicted; no prediction at all: ``reason`` says why."""

    prediction: Prediction | None
    tree_only: bool = False
    reason: str = ""

    @property
    def tokens_per_second(self) -> float | None:
        return self.prediction.tokens_per_second if self.prediction else None

    @property
    def tokens_per_step(self) -> float | None:
        return self.prediction.tokens_per_step if self.prediction else None


@dataclass
class Predictor:
    """The cost model of a run: the heads' accuracy table and this session's latency profile (either may
    be missing), each setup predicted once."""

    table: AccuracyTable | None
    profile: LatencyProfile | None
    known: dict[Setup, Predicted] = field(default_factory=dict)

    def __call__(self, setup: Setup) -> Predicted:
        if setup not in self.known:
            self.known[setup] = self.predict(setup)
        return self.known[setup]

    def predict(self, setup: Setup) -> Predicted:
        if self.table is None:
            return Predicted(None, reason=NO_TABLE)
        try:
            return Predicted(predict_setup(self.table, self.profile, setup.tree, setup.lookup))
        except ValueError as err:  # the table lacks the heads, ranks or lookup outcomes the setup uses
            if setup.lookup is None:
                return Predicted(None, reason=str(err))
            try:
                return Predicted(predict_setup(self.table, self.profile, setup.tree), True, str(err))
            except ValueError as tree_err:
                return Predicted(None, reason=str(tree_err))

    def source(self) -> str:
        if self.table is None:
            return NO_TABLE
        if self.profile is None:
            return NO_PROFILE
        return (f"Predicted from the accuracy table and the latency profile of {self.profile.device}: decoding "
                f"steps alone, while measured tokens/s include each prompt's prefill (much of a short answer).")


def best_points(points: Sequence[TrialPoint], objective: str, limit: int = BEST_ROWS) -> list[TrialPoint]:
    """Speed: the fastest distinct complete setups; Pareto: the front of speed against nodes, by nodes."""
    complete = sorted((p for p in points if not p.pruned), key=lambda p: (-p.tokens_per_second, p.number))
    if objective == "pareto":
        front = set(tune_figures.speed_front(points))
        chosen = {(p.nodes, p.tokens_per_second): p for p in reversed(complete)}
        return [chosen[key] for key in sorted(front)]
    distinct: list[TrialPoint] = []
    for point in complete:
        if point.setup not in [d.setup for d in distinct]:
            distinct.append(point)
    return distinct[:limit]


def number_text(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def ratio(measured: float, prediction: float | None) -> str:
    return "—" if not prediction else f"{measured / prediction:.2f}x"


def best_rows(points: Sequence[TrialPoint], objective: str, predictor: Predictor) -> list[list[Any]]:
    """One row per best setup: measured and predicted tokens/s and tokens/step, and their ratios."""
    rows = []
    for point in best_points(points, objective):
        guess = predictor(point.setup)
        speed, length = guess.tokens_per_second, guess.tokens_per_step
        rows.append([point.number, point.nodes, lookup_text(point.setup), number_text(point.tokens_per_second),
                     number_text(point.tokens_per_step, 3), number_text(speed), number_text(length, 3),
                     ratio(point.tokens_per_second, speed), ratio(point.tokens_per_step, length)])
    return rows


def prediction_note(points: Sequence[TrialPoint], objective: str, predictor: Predictor) -> str:
    """Where the predictions come from, and which rows are predicted for their tree alone or not at all."""
    caveats: dict[str, list[int]] = {}
    for point in best_points(points, objective):
        guess = predictor(point.setup)
        if guess.reason and guess.reason != NO_TABLE:
            what = "predicted for the heads' tree alone" if guess.tree_only else "not predicted"
            caveats.setdefault(f"{what}: {guess.reason}", []).append(point.number)
    lines = [predictor.source()]
    lines += [f"Trial {', '.join(map(str, numbers))} {text}" for text, numbers in caveats.items()]
    return "<br>".join(lines)


def live_status(snapshot: Snapshot) -> str:
    pruned = sum(p.pruned for p in snapshot.points)
    fastest = max((p.tokens_per_second for p in snapshot.points if not p.pruned), default=None)
    best = "" if fastest is None else f" · fastest so far {fastest:.2f} tokens/s"
    return f"Measuring: {snapshot.finished} of {snapshot.total} trials finished ({pruned} pruned){best}"


def final_note(outcome: Outcome, settings: TuneSettings, predictor: Predictor) -> str:
    result = outcome.result
    ended = "Stopped" if outcome.stopped else "Done"
    head = (f"**{ended}**: {len(outcome.points)} finished trials in {outcome.seconds:.0f} s, "
            f"{len(settings.prompts)} prompts x {settings.max_new_tokens} new tokens each.")
    if result is None:
        return f"{head} No trial was complete, so there is no tuned tree."
    best = result.best
    guess = predictor(best.setup).tokens_per_second
    speed = "" if guess is None else f" (predicted {guess:.2f}: {best.tokens_per_second / guess:.2f}x)"
    return (f"{head}<br>**Fastest: trial {best.number}**, {len(best.setup.tree)} nodes, lookup "
            f"{lookup_text(best.setup)}: **{best.tokens_per_second:.2f} tokens/s**{speed}, "
            f"{best.tokens_per_step:.3f} tokens/step.<br>"
            f"{prediction_note(outcome.points, settings.objective, predictor)}<br>{NOISE}")


def tuned_tree_file(outcome: Outcome, settings: TuneSettings, num_heads: int) -> str | None:
    """The fastest setup as a tree file (the CLI's writer), ready for download; None without one."""
    if outcome.result is None:
        return None
    with tempfile.TemporaryDirectory(prefix="medusa-tuned-") as folder:
        path = Path(folder) / "tuned-tree.json"
        save_tuned_tree(path, outcome.result, outcome.inputs, num_heads, TOP_K, objective=settings.objective,
                        budget=settings.budget, prompts=SOURCE, machine=outcome.machine)
        return write_download("tuned-tree.json", path.read_text(encoding="utf-8"))


# the page -------------------------------------------------------------------------------------
def fastest_point(points: Sequence[TrialPoint]) -> TrialPoint | None:
    complete = [p for p in points if not p.pruned]
    return max(complete, key=lambda p: p.tokens_per_second) if complete else None


def view(points: Sequence[TrialPoint], settings: TuneSettings, predictor: Predictor) -> tuple[Any, Any, list]:
    """History, Pareto plot and best-setups rows of the trials so far."""
    return (tune_figures.history_figure(points), tune_figures.pareto_figure(points, fastest_point(points)),
            best_rows(points, settings.objective, predictor))


def no_download() -> gr.DownloadButton:
    return gr.DownloadButton("⬇ tuned tree (JSON)", value=None, interactive=False)


TuneHandler = Callable[..., Iterator[tuple]]
StopHandler = Callable[[RunControl | None], None]


def make_tune_handlers(store: ModelStore) -> tuple[TuneHandler, StopHandler]:
    @gpu_task
    def tune(prompts: str, trials: float, budget: float, max_new_tokens: float, objective: str,
             control: RunControl | None, session_table: AccuracyTable | None, profile: LatencyProfile | None,
             key: ModelKey, progress: gr.Progress = gr.Progress()) -> Iterator[tuple]:
        """Measured tuning on the loaded model; outputs: status, history, Pareto plot, best setups, note, file."""
        control = control if control is not None else RunControl()
        run_id = control.start()
        gone = threading.Event()  # the page closed the stream: stop the worker too
        try:
            with shown_in_page("cannot tune"):
                settings = tune_settings(prompts, trials, budget, max_new_tokens, objective)
                medusa = store.get(key)
                measurer = decoder_measurer(medusa, settings)
                predictor = Predictor(shipped_table(medusa) or session_table, profile)
                yield from stream_tune(measurer, settings, predictor, store,
                                       lambda: gone.is_set() or control.should_stop(run_id), progress)
        finally:
            gone.set()

    def stop(control: RunControl | None) -> None:
        """Stop this session's tuning after the prompt being decoded (the finished trials stay)."""
        if control is not None:
            control.stop()

    return tune, stop


def stream_tune(measurer: DecoderMeasurer, settings: TuneSettings, predictor: Predictor, store: ModelStore,
                should_stop: Callable[[], bool], progress: gr.Progress) -> Iterator[tuple]:
    yield ("Warming up the decoder…", *view((), settings, predictor), predictor.source(), no_download())
    finished = 0
    progress((0, settings.trials), desc="measured tuning", unit="trials")

    def work(post: Callable[[object], None]) -> Outcome:
        return tune_work(measurer, settings, lambda: store.cpu_share(measurer.medusa), should_stop, post)

    for event in thread_events(work):
        if isinstance(event, PromptDone):
            progress((finished, settings.trials), desc=f"trial {finished + 1}: prompt {event.prompt} of "
                                                        f"{event.prompts} decoded", unit="trials")
        elif isinstance(event, Snapshot):
            finished = event.finished
            progress((finished, settings.trials), desc="measured tuning", unit="trials")
            yield (live_status(event), *view(event.points, settings, predictor),
                   prediction_note(event.points, settings.objective, predictor), gr.skip())
        elif isinstance(event, Outcome):
            file = tuned_tree_file(event, settings, measurer.num_heads)
            button = no_download() if file is None else gr.DownloadButton(value=file, interactive=True)
            yield ("", *view(event.points, settings, predictor), final_note(event, settings, predictor), button)


def build_tune_section(store: ModelStore, key_state: gr.State, accuracy_state: gr.State,
                       profile_state: gr.State) -> None:
    """The accordion: inputs, Run and Stop, the live plots, the best setups and the tuned tree's download."""
    tune, stop = make_tune_handlers(store)
    control_state = gr.State(RunControl())  # deep-copied: each session gets its own
    with gr.Accordion("Measured tuning (runs the real decoder)", open=False, elem_id="tune-accordion"):
        gr.Markdown("Optuna picks whole decoding setups (the heads' tree, at most *node budget* nodes, and the "
                    "context lookup) and the loaded model decodes the prompts below greedily with each: the "
                    "score is the measured tokens per second, as `python -m optimizer tune` does. A trial in "
                    "the slowest quarter after a prompt is pruned (speed objective, after 5 trials). Use "
                    "calibration prompts, not the ones you evaluate on.")
        with gr.Row():
            prompts = gr.Textbox(example_prompts(), lines=4, max_lines=12, scale=3, elem_id="tune-prompts",
                                 label=f"tuning prompts, one per line (up to {MAX_TUNE_PROMPTS})")
            with gr.Column(scale=2, min_width=300):
                with gr.Row():
                    trials = gr.Number(12, precision=0, label="trials", elem_id="tune-trials")
                    budget = gr.Number(64, precision=0, label="node budget", elem_id="tune-budget")
                    tokens = gr.Number(32, precision=0, label="max new tokens", elem_id="tune-max-new-tokens")
                objective = gr.Radio(OBJECTIVE_CHOICES, value="speed", label="objective", elem_id="tune-objective")
                with gr.Row():
                    run_button = gr.Button("Run measured tuning", variant="primary", elem_id="tune-run")
                    stop_button = gr.Button("Stop", variant="stop", elem_id="tune-stop", scale=0, min_width=70)
        status = gr.Markdown("", elem_id="tune-status", min_height=30)
        with gr.Row():
            history = gr.Plot(tune_figures.history_figure(()), label="tuning history", elem_id="tune-history")
            pareto = gr.Plot(tune_figures.pareto_figure((), None), label="speed vs nodes", elem_id="tune-pareto")
        best = gr.Dataframe(headers=TABLE_HEADERS, label="best setups: measured against predicted", interactive=False,
                            elem_id="tune-best")
        note = gr.Markdown(elem_id="tune-note")
        download = gr.DownloadButton("⬇ tuned tree (JSON)", interactive=False, elem_id="tune-download", size="sm")
    run_button.click(tune, inputs=[prompts, trials, budget, tokens, objective, control_state, accuracy_state,
                                   profile_state, key_state],
                     outputs=[status, history, pareto, best, note, download], api_name="tune", concurrency_id="heavy",
                     show_progress_on=[status])
    # Its own slot (no concurrency limit): a Stop must not queue behind the run it is meant to stop.
    stop_button.click(stop, inputs=[control_state], api_name="stop_tune", concurrency_limit=None,
                      show_progress="hidden")
