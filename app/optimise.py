"""Optimise tab: search tree shapes with Optuna for an accuracy table, compare with the presets and
the exact optimum, export the tree for serving engines, or send it to the Explore tab."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr
import numpy as np
import optuna
from optuna.trial import TrialState

from medusa_core import preset_tree, validate_tree
from medusa_core.bench.latency import PROPOSAL_TOP_K, decoder_step_fn
from optimizer import (
    AccuracyTable,
    EngineError,
    LatencyProfile,
    SearchConfig,
    SearchProgress,
    SearchResult,
    TRTLLM_MAX_DRAFT_LEN,
    TreeScorer,
    TreeTrial,
    check_tree_for_engine,
    measure_step_profile,
    objective_names,
    resolve_accuracy,
    run_search,
    tokens_per_second,
)

from optimizer.profile_check import check_profile

from . import exports, figures
from .explore import OPTIMISED, ExploreTab, whole_number
from .heads_tab import SESSION, SHIPPED, TABLE_CHOICES, shipped_table, upload_accuracy
from .inputs import InputError, shown_in_page, user_error
from .runtime import gpu_task
from .store import ModelKey, ModelStore
from .tune_tab import build_tune_section

Path_ = tuple[int, ...]

OBJECTIVE_CHOICES = [
    ("expected tokens per step", "length"),
    ("predicted tokens per second (needs the latency profile)", "speed"),
    ("Pareto: tokens per step vs nodes", "length-vs-nodes"),
    ("Pareto: tokens per step vs latency", "length-vs-latency"),
]
ENGINE_CHOICES = [("any tree", "none"), ("TensorRT-LLM (≤ 63 nodes)", "trtllm"), ("vLLM (same children on every level)", "vllm")]
LENGTH_MODELS = [("auto (replay when the table has rank vectors)", "auto"), ("independence", "independence"), ("empirical replay", "empirical")]
NEEDS_PROFILE = ("speed", "length-vs-latency")
PROFILE_SIZES = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128)
PROFILE_REPEATS = 3
COMPARED_PRESETS = ("full-2x2", "full-2x3", "full-3x2", "mc_sim_7b_63")  # plus a chain over all heads
optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar reports trials; keep the server log quiet

COMPARISON_HEADERS = ["tree", "nodes", "depth", "expected tokens/step", "predicted tokens/s", "fits engine"]


@dataclass(frozen=True)
class OptimisedTree:
    """The last search's best tree in a session, with what is needed to export it."""

    paths: tuple[Path_, ...]
    num_heads: int
    top_k: int
    meta: dict


def resolve_table(source: str, session_table: AccuracyTable | None, shipped: Callable[[], AccuracyTable | None]) -> AccuracyTable:
    """The table the search uses: the loaded heads' shipped one, this session's, or a reference."""
    if source == SHIPPED:
        table = shipped()
        if table is None:
            raise InputError("no accuracy table ships with the loaded heads: calibrate or upload one in the Heads tab, or pick a reference")
        return table
    if source == SESSION:
        if session_table is None:
            raise InputError("this session has no calibrated or uploaded table: make one in the Heads tab, or pick the shipped or a reference table")
        return session_table
    return resolve_accuracy(source)


def check_settings(objective: str, engine: str, budget: int, profile: LatencyProfile | None) -> None:
    """Settings that cannot work together, refused before the search in the page's words."""
    if profile is None and objective in NEEDS_PROFILE:
        raise InputError("this objective needs the latency profile: open 'Latency profile of this device' and press Measure")
    if engine == "trtllm" and budget > TRTLLM_MAX_DRAFT_LEN:
        raise InputError(f"TensorRT-LLM takes at most {TRTLLM_MAX_DRAFT_LEN} tree nodes: lower the node budget to "
                         f"{TRTLLM_MAX_DRAFT_LEN} or less, or choose 'any tree'")


def complete_trials(result: SearchResult) -> list:
    return sorted(result.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)


def preset_trees(num_heads: int) -> list[tuple[str, tuple[Path_, ...]]]:
    names = [f"chain-{num_heads}", *COMPARED_PRESETS]
    return [(name, preset_tree(name)) for name in names]


def engine_fit(tree: Sequence[Path_], engine: str) -> str:
    try:
        check_tree_for_engine(tree, engine)
    except EngineError:
        return "no"
    return "yes"


def comparison_rows(result: SearchResult, table: AccuracyTable, profile: LatencyProfile | None,
                    chosen: TreeTrial | None = None) -> list[list]:
    found = (chosen or result.best).tree
    named = [("best found", found), ("exact optimum", result.exact.tree), *preset_trees(table.num_heads)]
    scorer = TreeScorer(table, result.length_model)
    lengths = scorer.expected_lengths([tree for _, tree in named])
    rows = []
    for (name, tree), length in zip(named, lengths):
        speed = f"{tokens_per_second(float(length), len(tree), profile):.1f}" if profile else "—"
        depth = max((len(p) for p in tree), default=0)
        rows.append([name, len(tree), depth, round(float(length), 3), speed, engine_fit(tree, result.config.engine)])
    return rows


@dataclass(frozen=True)
class FrontPoint:
    """A tree on the Pareto front: its expected length and its cost (nodes, or predicted seconds per step)."""

    tree: tuple[Path_, ...]
    length: float
    seconds: float | None = None  # length-vs-latency: the profile's seconds per step

    @property
    def nodes(self) -> int:
        return len(self.tree)

    def label(self) -> str:
        text = f"{self.nodes} nodes · {self.length:.3f} tokens/step"
        if self.seconds:
            text += f" · {self.seconds * 1000:.0f} ms/step · {self.length / self.seconds:.1f} tokens/s predicted"
        return text


@dataclass(frozen=True)
class SearchView:
    """What picking another tree on the front needs (kept in the session)."""

    points: tuple[FrontPoint, ...]
    result: SearchResult
    table: AccuracyTable
    source: str
    trials: int
    profile: LatencyProfile | None = None


def is_pareto(objective: str) -> bool:
    return len(objective_names(objective)) == 2


def front_points(result: SearchResult) -> tuple[FrontPoint, ...]:
    latency = result.config.objective == "length-vs-latency"
    return tuple(FrontPoint(t.tree, t.expected_length, t.values[1] if latency else None) for t in result.pareto)


def default_pick(points: Sequence[FrontPoint]) -> int:
    """With a latency profile: the fastest predicted tree of the front; by nodes: the longest."""
    if points and points[0].seconds:
        return max(range(len(points)), key=lambda i: points[i].length / points[i].seconds)
    return max(range(len(points)), key=lambda i: (points[i].length, -points[i].nodes)) if points else 0


def chosen_trial(view: SearchView, pick: int | None) -> TreeTrial:
    if not view.points or pick is None:
        return view.result.best
    point = view.points[min(max(int(pick), 0), len(view.points) - 1)]
    return TreeTrial(-1, point.tree, (point.length,), point.length)


def best_summary(view: SearchView, chosen: TreeTrial) -> str:
    result, table = view.result, view.table
    exact = result.exact
    depth = max((len(p) for p in chosen.tree), default=0)
    share = chosen.expected_length / exact.value if exact.value and not is_pareto(result.config.objective) else None
    if is_pareto(result.config.objective):
        head = f"**Tree on the Pareto front** (pick another point below): {len(chosen.tree)} nodes, depth {depth}"
        reference = f"exact optimum for the whole budget {exact.value:.3f}"
    else:
        first = objective_names(result.config.objective)[0]
        head = f"**Best tree**: {len(chosen.tree)} nodes, depth {depth}"
        reference = f"{first}: {chosen.values[0]:.3f}; exact optimum {exact.value:.3f}, reached {share:.1%}"
    samples = f", {table.samples} positions" if table.samples else ""
    return (f"{head}, **{chosen.expected_length:.3f} expected tokens per step** ({reference}) · {view.trials} trials · "
            f"length model {result.length_model} · table: {table_name(view.source, table)}{samples}")


def table_name(source: str, table: AccuracyTable) -> str:
    names = dict((value, label) for label, value in TABLE_CHOICES)
    return names.get(source, source) + (f" ({table.model})" if table.model else "")


def best_tree_figure(chosen: TreeTrial, view: SearchView) -> Any:
    scorer = TreeScorer(view.table, view.result.length_model)
    weights = scorer.node_values(chosen.tree) if chosen.tree else np.zeros(0)
    shape = figures.shape_tree_view(chosen.tree, weights.tolist())
    title = "Chosen tree" if is_pareto(view.result.config.objective) else "Best tree"
    return figures.tree_figure(shape, "probability", f"{title} (colour: chance each node is on the accepted path)")


def search_figures(result: SearchResult, table: AccuracyTable, chosen: TreeTrial) -> tuple[Any, Any, Any]:
    trials = complete_trials(result)
    history = figures.history_figure([t.values[0] for t in trials], objective_names(result.config.objective)[0])
    pareto = pareto_plot(result, trials, chosen)
    scorer = TreeScorer(table, result.length_model)
    presets = [(name, len(tree), float(length)) for (name, tree), length in
               zip(preset_trees(table.num_heads), scorer.expected_lengths([t for _, t in preset_trees(table.num_heads)]))]
    curve = figures.curve_figure(result.exact.curve.tolist(), presets, (len(chosen.tree), chosen.expected_length))
    return history, pareto, curve


def pareto_plot(result: SearchResult, trials: list, chosen: TreeTrial) -> Any:
    """Expected length against the objective's cost: predicted ms per step for the latency objective, else nodes."""
    lengths = [float(t.user_attrs["expected_length"]) for t in trials]
    if result.config.objective == "length-vs-latency":
        cost = [t.values[1] * 1000 for t in trials]
        by_tree = {tuple(map(tuple, t.user_attrs["paths"])): c for t, c in zip(trials, cost)}
        chosen_cost = by_tree.get(chosen.tree, float("nan"))
        return figures.pareto_figure(list(zip(cost, lengths)), (chosen_cost, chosen.expected_length), "predicted ms per step")
    nodes = [len(t.user_attrs["paths"]) for t in trials]
    if len(set(nodes)) < 2:
        return figures.no_tradeoff_figure(nodes[0] if nodes else result.config.budget)
    return figures.pareto_figure(list(zip(nodes, lengths)), (len(chosen.tree), chosen.expected_length))


def optimised_tree(view: SearchView, chosen: TreeTrial) -> OptimisedTree:
    result = view.result
    meta = {
        "source": f"medusa-explorer optimise tab, table {view.source}",
        "objective": result.config.objective,
        "objective_value": chosen.values[0],
        "expected_length": chosen.expected_length,
        "length_model": result.length_model,
        "budget": result.config.budget,
        "engine": result.config.engine,
        "trials": result.config.n_trials,
    }
    return OptimisedTree(chosen.tree, view.table.num_heads, view.table.top_k, meta)


def front_picker(view: SearchView, pick: int) -> gr.Dropdown:
    choices = [(point.label(), i) for i, point in enumerate(view.points)]
    return gr.Dropdown(choices=choices, value=pick if choices else None, visible=bool(choices))


def view_outputs(view: SearchView, pick: int | None) -> tuple:
    """summary, best tree, history, Pareto, E(N), comparison, tree state, export note, downloads..., picker, view."""
    chosen = chosen_trial(view, pick)
    tree = optimised_tree(view, chosen)
    history, pareto, curve = search_figures(view.result, view.table, chosen)
    buttons, export_note = exports.download_buttons(tree)
    return (best_summary(view, chosen), best_tree_figure(chosen, view), history, pareto, curve,
            comparison_rows(view.result, view.table, view.profile, chosen), tree, export_note, *buttons,
            front_picker(view, pick or 0), view)


def profile_note(profile: LatencyProfile) -> str:
    one, most = profile.latency(1), profile.latency(profile.sizes[-1])
    rounds = profile.meta.get("round_seconds", {})
    check = check_profile(profile.sizes, profile.seconds, {int(k): v for k, v in rounds.items()})
    verdict = f"Profile **{'regular' if check.regular else '⚠ irregular'}**: " + check.describe().split(": ", 1)[1] + "."
    return (f"Profile of **{profile.device}**: 1 token {one * 1000:.0f} ms, {profile.sizes[-1]} tokens {most * 1000:.0f} ms "
            f"per pass.<br>{verdict}")


def last_good_note(tree: OptimisedTree | None) -> str:
    """After a failed search or upload: nothing below changed, and what it shows."""
    if tree is None:
        return "✗ That did not run (the message says why); nothing was optimised yet."
    return (f"✗ That did not run (the message says why). Below is still the last good result: a {len(tree.paths)}-node tree "
            f"for '{tree.meta.get('objective')}', budget {tree.meta.get('budget')}, engine {tree.meta.get('engine')}.")


def make_handlers(store: ModelStore):
    def optimise(source: str, budget: float, objective: str, length_model: str, engine: str, trials: float, seed: float,
                 warm_start: bool, session_table: AccuracyTable | None, profile: LatencyProfile | None, key: ModelKey,
                 progress: gr.Progress = gr.Progress()) -> tuple:
        """Run the Optuna study; outputs: summary, best tree, history, Pareto front, E(N), comparison,
        the session's optimised tree, the export note, one download per export format, the front picker,
        the search view (state) and the status note."""
        with shown_in_page("cannot optimise"):
            check_settings(objective, engine, int(budget), profile)
            table = resolve_table(source, session_table, lambda: shipped_table(store.get(key)))
            config = SearchConfig(budget=int(budget), objective=objective, length_model=length_model, engine=engine,
                                  n_trials=int(trials), seed=whole_number(seed, "seed"), cold=not warm_start, storage=None)

            def report(state: SearchProgress) -> None:
                best = "" if state.best_value is None else f" · best {state.best_value:.3f}"
                progress((state.completed, state.total), desc=f"Optuna trials{best}", unit="trials")

            progress((0, int(trials)), desc="Optuna trials", unit="trials")
            result = run_search(table, config, profile, progress=report)
        points = front_points(result) if is_pareto(objective) else ()
        view = SearchView(points, result, table, source, len(complete_trials(result)), profile)
        return (*view_outputs(view, default_pick(points) if points else None), "")

    def pick_front(pick: int | None, view: SearchView | None) -> tuple:
        """Show another tree of the Pareto front: summary, tree, plots, exports and 'Use in Explore' follow it."""
        if view is None or not view.points:
            raise user_error("Run a search with a Pareto objective first; its front's trees can then be picked.")
        return view_outputs(view, pick)[:-1] + ("",)  # the view state stays as it is

    @gpu_task
    def measure_profile(key: ModelKey, progress: gr.Progress = gr.Progress()) -> tuple[LatencyProfile, Any, str]:
        """Time the decoder's step over many tree shapes on this device and fit its cost model."""
        medusa = store.get(key)
        base = medusa.base
        step = decoder_step_fn(medusa)  # the decoder's own step, as generate runs it
        info = {"model": base.model_id, "device": str(base.device), "dtype": str(base.dtype).removeprefix("torch.")}
        top_k = min(PROPOSAL_TOP_K, medusa.proposal.size) if medusa.proposal else PROPOSAL_TOP_K
        progress((0, PROFILE_REPEATS), desc="timing decoder steps", unit="rounds")
        profile = measure_step_profile(step, medusa.num_heads, top_k, PROFILE_SIZES, repeats=PROFILE_REPEATS, warmup=1,
                                       info=info, progress=lambda done, total: progress((done, total),
                                                                                        desc="timing decoder steps",
                                                                                        unit="rounds"))
        return profile, figures.latency_figure(profile.sizes, profile.seconds, str(base.device)), profile_note(profile)

    def upload_table(path: str | None) -> tuple[AccuracyTable, Any, str]:
        with shown_in_page("invalid accuracy table"):
            table = upload_accuracy(path)
        return table, gr.Dropdown(value=SESSION), f"Uploaded table: {table.num_heads} heads, top_k {table.top_k}, {table.samples} positions."

    def use_in_explore(tree: OptimisedTree | None, key: ModelKey) -> tuple[tuple[Path_, ...], Any, Any, str]:
        """Send the best tree to the Explore tab (cut to the loaded heads' depth if deeper)."""
        if tree is None:
            raise user_error("Run an optimisation first.")
        heads = store.get(key).num_heads
        paths = validate_tree([p for p in tree.paths if len(p) <= heads], heads)
        note = "" if len(paths) == len(tree.paths) else f" (cut to the loaded {heads} heads: {len(paths)} of {len(tree.paths)} nodes)"
        return paths, gr.Tabs(selected="explore"), gr.Dropdown(value=OPTIMISED), f"Optimised tree in use{note}."

    return optimise, pick_front, measure_profile, upload_table, use_in_explore


def build_optimise_tab(store: ModelStore, key_state: gr.State, accuracy_state: gr.State, optimised_state: gr.State,
                       profile_state: gr.State, explore: ExploreTab, tabs: gr.Tabs) -> None:
    optimise, pick_front, measure_profile, upload_table, use_in_explore = make_handlers(store)
    with gr.Tab("Optimise", id="optimise"):
        best_state = gr.State(None)
        view_state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                source = gr.Dropdown(TABLE_CHOICES, value=SHIPPED, label="accuracy table", elem_id="optimise-source")
                table_upload = gr.UploadButton("Upload an accuracy table (JSON)", file_types=[".json"], type="filepath", size="sm", elem_id="optimise-upload")
                budget = gr.Slider(1, 128, value=32, step=1, label="node budget", elem_id="budget")
                objective = gr.Radio(OBJECTIVE_CHOICES, value="length", label="objective")
                engine = gr.Radio(ENGINE_CHOICES, value="none", label="engine constraint")
                length_model = gr.Radio(LENGTH_MODELS, value="auto", label="length model")
                with gr.Row():
                    trials = gr.Slider(5, 1000, value=100, step=5, label="trials", elem_id="trials")
                    seed = gr.Number(0, precision=None, step=1, label="seed (a whole number)")
                warm_start = gr.Checkbox(True, label="start from the exact optimum and presets (off: Optuna alone)")
                run_button = gr.Button("Optimise", variant="primary", elem_id="optimise-button")
                with gr.Accordion("Latency profile of this device (speed objectives)", open=False):
                    profile_button = gr.Button("Measure latency profile", elem_id="profile-button")
                    profile_note_md = gr.Markdown("Not measured yet.", label="profile", elem_id="profile-note")
                    profile_plot = gr.Plot(label="latency profile")
            with gr.Column(scale=2):
                # Progress and failures show here, so a failed search never covers the last good result below.
                status = gr.Markdown("", elem_id="optimise-status", min_height=40)
                summary = gr.Markdown("Press **Optimise** to search for the best tree.", label="summary", elem_id="optimise-summary")
                front_choice = gr.Dropdown([], label="tree on the Pareto front", visible=False, elem_id="front-choice")
                best_plot = gr.Plot(figures.empty_figure("The best tree appears here", 300), label="Best tree", elem_id="best-tree-plot")
                with gr.Row():
                    use_button = gr.Button("Use in Explore", elem_id="use-in-explore")
                    use_note = gr.Markdown(label="explore tree")
                with gr.Row():
                    downloads = exports.build_download_buttons()
                export_note = gr.Markdown(label="exports", elem_id="export-note")
                with gr.Row():
                    history_plot = gr.Plot(label="history", elem_id="history-plot")
                    pareto_plot_out = gr.Plot(label="Pareto front", elem_id="pareto-plot")
                curve_plot = gr.Plot(label="E(N)", elem_id="curve-plot")
                comparison = gr.Dataframe(headers=COMPARISON_HEADERS, label="Comparison with the presets (same table and length model)", interactive=False, elem_id="preset-comparison")
        build_tune_section(store, key_state, accuracy_state, profile_state)  # measured tuning, full width
    results = [summary, best_plot, history_plot, pareto_plot_out, curve_plot, comparison, best_state, export_note, *downloads]
    search = run_button.click(optimise, inputs=[source, budget, objective, length_model, engine, trials, seed, warm_start, accuracy_state,
                                                profile_state, key_state],
                              outputs=[*results, front_choice, view_state, status], api_name="optimise", concurrency_id="heavy",
                              show_progress_on=[status])
    front_choice.input(pick_front, inputs=[front_choice, view_state], outputs=[*results, front_choice, status], api_name="pick_front",
                       show_progress_on=[status])
    profile_button.click(measure_profile, inputs=[key_state], outputs=[profile_state, profile_plot, profile_note_md], api_name="latency_profile", concurrency_id="heavy")
    upload = table_upload.upload(upload_table, inputs=[table_upload], outputs=[accuracy_state, source, status], api_name="optimise_upload_accuracy",
                                 show_progress_on=[status])
    for event in (search, upload):
        event.failure(last_good_note, inputs=[best_state], outputs=[status], api_visibility="private")
    use_event = use_button.click(use_in_explore, inputs=[best_state, key_state], outputs=[optimised_state, tabs, explore.tree_choice, use_note], api_name="use_in_explore")
    explore.refresh_mask(use_event)
