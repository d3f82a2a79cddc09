"""Optimise tab: search tree shapes with Optuna for an accuracy table, compare with the presets and
the exact optimum, export the tree for serving engines, or send it to the Explore tab."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
import optuna
from optuna.trial import TrialState

from medusa_core import preset_tree, validate_tree
from medusa_core.bench.latency import tree_forward_fn
from optimizer import (
    AccuracyTable,
    EngineError,
    LatencyProfile,
    SearchConfig,
    SearchProgress,
    SearchResult,
    TreeScorer,
    check_tree_for_engine,
    measure_latency_profile,
    objective_names,
    resolve_accuracy,
    run_search,
    tokens_per_second,
)

from . import exports, figures
from .explore import OPTIMISED, ExploreTab
from .heads_tab import REFERENCE_CHOICES, SESSION, upload_accuracy
from .inputs import InputError, shown_in_page
from .runtime import gpu_task
from .store import ModelKey, ModelStore

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


def resolve_table(source: str, session_table: AccuracyTable | None) -> AccuracyTable:
    if source != SESSION:
        return resolve_accuracy(source)
    if session_table is None:
        raise ValueError("this session has no measured table: calibrate or upload one in the Heads tab, or pick a reference table")
    return session_table


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


def comparison_rows(result: SearchResult, table: AccuracyTable, profile: LatencyProfile | None) -> list[list]:
    named = [("best found", result.best.tree), ("exact optimum", result.exact.tree), *preset_trees(table.num_heads)]
    scorer = TreeScorer(table, result.length_model)
    lengths = scorer.expected_lengths([tree for _, tree in named])
    rows = []
    for (name, tree), length in zip(named, lengths):
        speed = f"{tokens_per_second(float(length), len(tree), profile):.1f}" if profile else "—"
        depth = max((len(p) for p in tree), default=0)
        rows.append([name, len(tree), depth, round(float(length), 3), speed, engine_fit(tree, result.config.engine)])
    return rows


def best_summary(result: SearchResult, table: AccuracyTable, trials: int) -> str:
    best, exact = result.best, result.exact
    first = objective_names(result.config.objective)[0]
    share = best.values[0] / exact.value if exact.value else 0.0
    depth = max((len(p) for p in best.tree), default=0)
    return (
        f"**Best tree**: {len(best.tree)} nodes, depth {depth}, **{best.expected_length:.3f} expected tokens per step** "
        f"({first}: {best.values[0]:.3f}; exact optimum {exact.value:.3f}, reached {share:.1%}) · "
        f"{trials} trials · length model {result.length_model} · table: {table.model or 'uploaded'}"
    )


def best_tree_figure(result: SearchResult, table: AccuracyTable) -> Any:
    weights = TreeScorer(table, result.length_model).node_values(result.best.tree) if result.best.tree else np.zeros(0)
    view = figures.shape_tree_view(result.best.tree, weights.tolist())
    return figures.tree_figure(view, "probability", "Best tree (colour: chance each node is on the accepted path)")


def search_figures(result: SearchResult, table: AccuracyTable) -> tuple[Any, Any, Any]:
    trials = complete_trials(result)
    history = figures.history_figure([t.values[0] for t in trials], objective_names(result.config.objective)[0])
    points = [(len(t.user_attrs["paths"]), float(t.user_attrs["expected_length"])) for t in trials]
    best = (len(result.best.tree), result.best.expected_length)
    pareto = figures.pareto_figure(points, best)
    scorer = TreeScorer(table, result.length_model)
    presets = [(name, len(tree), float(length)) for (name, tree), length in
               zip(preset_trees(table.num_heads), scorer.expected_lengths([t for _, t in preset_trees(table.num_heads)]))]
    curve = figures.curve_figure(result.exact.curve.tolist(), presets, best)
    return history, pareto, curve


def optimised_tree(result: SearchResult, table: AccuracyTable, source: str) -> OptimisedTree:
    meta = {
        "source": f"medusa-explorer optimise tab, table {source}",
        "objective": result.config.objective,
        "objective_value": result.best.values[0],
        "expected_length": result.best.expected_length,
        "length_model": result.length_model,
        "budget": result.config.budget,
        "engine": result.config.engine,
        "trials": result.config.n_trials,
    }
    return OptimisedTree(result.best.tree, table.num_heads, table.top_k, meta)


def make_handlers(store: ModelStore):
    def optimise(source: str, budget: float, objective: str, length_model: str, engine: str, trials: float, seed: float,
                 warm_start: bool, session_table: AccuracyTable | None, profile: LatencyProfile | None,
                 progress: gr.Progress = gr.Progress()) -> tuple:
        """Run the Optuna study; outputs: summary, best tree, history, Pareto front, E(N), comparison,
        the session's optimised tree, the export note, then one download per export format."""
        with shown_in_page("cannot optimise"):
            if profile is None and objective in NEEDS_PROFILE:
                raise InputError("this objective needs the latency profile: open 'Latency profile of this device' and press Measure")
            table = resolve_table(source, session_table)
            config = SearchConfig(budget=int(budget), objective=objective, length_model=length_model, engine=engine,
                                  n_trials=int(trials), seed=int(seed), cold=not warm_start, storage=None)

            def report(state: SearchProgress) -> None:
                best = "" if state.best_value is None else f" · best {state.best_value:.3f}"
                progress((state.completed, state.total), desc=f"Optuna trials{best}", unit="trials")

            progress((0, int(trials)), desc="Optuna trials", unit="trials")
            result = run_search(table, config, profile, progress=report)
        tree = optimised_tree(result, table, source)
        history, pareto, curve = search_figures(result, table)
        buttons, export_note = exports.download_buttons(tree)
        return (best_summary(result, table, len(complete_trials(result))), best_tree_figure(result, table), history, pareto, curve,
                comparison_rows(result, table, profile), tree, export_note, *buttons)

    @gpu_task
    def measure_profile(key: ModelKey, progress: gr.Progress = gr.Progress()) -> tuple[LatencyProfile, Any, str]:
        """Time one tree-verification pass per tree size on this device (for the speed objective)."""
        medusa = store.get(key)
        base = medusa.base
        forward = tree_forward_fn(medusa)  # n >= 2 includes the heads' proposal, as a decoding step
        info = {"model": base.model_id, "device": str(base.device), "dtype": str(base.dtype).removeprefix("torch.")}
        progress((0, PROFILE_REPEATS), desc="timing forward passes", unit="rounds")
        profile = measure_latency_profile(forward, PROFILE_SIZES, repeats=PROFILE_REPEATS, warmup=1, info=info,
                                          progress=lambda done, total: progress((done, total), desc="timing forward passes", unit="rounds"))
        one, most = profile.latency(1), profile.latency(PROFILE_SIZES[-1])
        note = f"Profile of **{base.device}**: 1 token {one * 1000:.0f} ms, {PROFILE_SIZES[-1]} tokens {most * 1000:.0f} ms per pass."
        return profile, figures.latency_figure(profile.sizes, profile.seconds, str(base.device)), note

    def upload_table(path: str | None) -> tuple[AccuracyTable, Any, str]:
        with shown_in_page("invalid accuracy table"):
            table = upload_accuracy(path)
        return table, gr.Dropdown(value=SESSION), f"Uploaded table: {table.num_heads} heads, top_k {table.top_k}."

    def use_in_explore(tree: OptimisedTree | None, key: ModelKey) -> tuple[tuple[Path_, ...], Any, Any, str]:
        """Send the best tree to the Explore tab (cut to the loaded heads' depth if deeper)."""
        if tree is None:
            raise gr.Error("Run an optimisation first.")
        heads = store.get(key).num_heads
        paths = validate_tree([p for p in tree.paths if len(p) <= heads], heads)
        note = "" if len(paths) == len(tree.paths) else f" (cut to the loaded {heads} heads: {len(paths)} of {len(tree.paths)} nodes)"
        return paths, gr.Tabs(selected="explore"), gr.Dropdown(value=OPTIMISED), f"Optimised tree in use{note}."

    return optimise, measure_profile, upload_table, use_in_explore


def build_optimise_tab(store: ModelStore, key_state: gr.State, accuracy_state: gr.State, optimised_state: gr.State,
                       explore: ExploreTab, tabs: gr.Tabs) -> None:
    optimise, measure_profile, upload_table, use_in_explore = make_handlers(store)
    with gr.Tab("Optimise", id="optimise"):
        profile_state = gr.State(None)
        best_state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                source = gr.Dropdown([("this session's table (Heads tab)", SESSION), *REFERENCE_CHOICES], value=SESSION, label="accuracy table", elem_id="optimise-source")
                table_upload = gr.UploadButton("Upload an accuracy table (JSON)", file_types=[".json"], type="filepath", size="sm", elem_id="optimise-upload")
                budget = gr.Slider(1, 128, value=32, step=1, label="node budget", elem_id="budget")
                objective = gr.Radio(OBJECTIVE_CHOICES, value="length", label="objective")
                engine = gr.Radio(ENGINE_CHOICES, value="none", label="engine constraint")
                length_model = gr.Radio(LENGTH_MODELS, value="auto", label="length model")
                with gr.Row():
                    trials = gr.Slider(5, 1000, value=100, step=5, label="trials", elem_id="trials")
                    seed = gr.Number(0, precision=0, label="seed")
                warm_start = gr.Checkbox(True, label="start from the exact optimum and presets (off: Optuna alone)")
                run_button = gr.Button("Optimise", variant="primary", elem_id="optimise-button")
                with gr.Accordion("Latency profile of this device (speed objectives)", open=False):
                    profile_button = gr.Button("Measure latency profile", elem_id="profile-button")
                    profile_note = gr.Markdown("Not measured yet.", label="profile")
                    profile_plot = gr.Plot(label="latency profile")
            with gr.Column(scale=2):
                summary = gr.Markdown("Press **Optimise** to search for the best tree.", label="summary", elem_id="optimise-summary")
                best_plot = gr.Plot(figures.empty_figure("The best tree appears here", 300), label="Best tree", elem_id="best-tree-plot")
                with gr.Row():
                    use_button = gr.Button("Use in Explore", elem_id="use-in-explore")
                    use_note = gr.Markdown(label="explore tree")
                with gr.Row():
                    downloads = exports.build_download_buttons()
                export_note = gr.Markdown(label="exports", elem_id="export-note")
                with gr.Row():
                    history_plot = gr.Plot(label="history", elem_id="history-plot")
                    pareto_plot = gr.Plot(label="Pareto front", elem_id="pareto-plot")
                curve_plot = gr.Plot(label="E(N)", elem_id="curve-plot")
                comparison = gr.Dataframe(headers=COMPARISON_HEADERS, label="Comparison with the presets (same table and length model)", interactive=False, elem_id="preset-comparison")
    run_button.click(optimise, inputs=[source, budget, objective, length_model, engine, trials, seed, warm_start, accuracy_state, profile_state],
                     outputs=[summary, best_plot, history_plot, pareto_plot, curve_plot, comparison, best_state, export_note, *downloads], api_name="optimise", concurrency_id="heavy")
    profile_button.click(measure_profile, inputs=[key_state], outputs=[profile_state, profile_plot, profile_note], api_name="latency_profile", concurrency_id="heavy")
    table_upload.upload(upload_table, inputs=[table_upload], outputs=[accuracy_state, source, summary], api_name="optimise_upload_accuracy")
    use_event = use_button.click(use_in_explore, inputs=[best_state, key_state], outputs=[optimised_state, tabs, explore.tree_choice, use_note], api_name="use_in_explore")
    explore.refresh_mask(use_event)
