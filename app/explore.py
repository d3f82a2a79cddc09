"""Explore tab: run a prompt and watch each step's candidate tree, accepted path and statistics."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import gradio as gr

from medusa_core import (
    DecodeConfig,
    GenerationRecord,
    LookupConfig,
    MedusaModel,
    StepRecord,
    SamplingConfig,
    TypicalConfig,
    build_tree_buffers,
    first_divergence,
    generate,
    lookup_or_none,
    preset_tree,
    stream_generation,
    validate_tree,
)
from optimizer import import_tree

from . import figures
from .inputs import InputError, shown_in_page, upload_text, write_download
from .runtime import MAX_PROMPT_CHARS, gpu_task
from .store import ModelKey, ModelStore
from .text import comparison_html, live_stats_html, stat_cards, stats_html, step_caption, step_spans, text_html

Path_ = tuple[int, ...]

HEADS_DEFAULT = "heads-default"
OPTIMISED = "optimised"
UPLOADED = "uploaded"
PRESETS = ("chain-4", "full-2x2", "full-2x3", "full-3x2", "mc_sim_7b_63", "chain-0")
TREE_CHOICES: list[tuple[str, str]] = (
    [("heads' default tree", HEADS_DEFAULT)]
    + [(name if name != "chain-0" else "chain-0 (plain decoding)", name) for name in PRESETS]
    + [("optimiser's latest tree", OPTIMISED), ("uploaded tree file", UPLOADED)]
)
STREAM_INTERVAL_S = 0.25  # at most ~4 page updates a second while decoding (the first step at once)
RUN_TTL_S = 3600  # a session's last run (all its trees) is dropped an hour after it was stored
EXAMPLE_PROMPT = "Explain in two sentences why the sky is blue."
LOOKUP_DEFAULT = "heads-default"
LOOKUP_CHOICES: list[tuple[str, str]] = [("heads' default", LOOKUP_DEFAULT), ("off", "0")] + [
    (f"{n} tokens", str(n)) for n in (2, 3, 4, 6, 8, 10)
]


@dataclass(frozen=True)
class RunView:
    """The last run of a session, kept for the step slider."""

    steps: tuple[StepRecord, ...]

    @property
    def num_steps(self) -> int:
        return len(self.steps)


@dataclass
class ExploreTab:
    """Components other tabs need: where a tree choice lands, and the mask to redraw."""

    tree_choice: gr.Dropdown
    tree_info: gr.Markdown
    mask_plot: gr.Plot
    tree_mask: Callable[..., tuple[Any, str]]  # redraws the mask (after a model load, a new tree)
    mask_inputs: list[Any]

    def refresh_mask(self, event: Any) -> None:
        """Redraw the mask and tree summary after `event` succeeds (a model is ready, a tree chosen)."""
        event.success(self.tree_mask, inputs=self.mask_inputs, outputs=[self.mask_plot, self.tree_info], api_visibility="private")


def choose_tree(choice: str, medusa: MedusaModel, uploaded: Sequence[Path_] | None, optimised: Sequence[Path_] | None) -> tuple[Path_, ...]:
    """The session's chosen tree, checked against the loaded heads."""
    if choice == HEADS_DEFAULT:
        paths: Sequence[Path_] = medusa.default_tree
    elif choice == OPTIMISED:
        if optimised is None:
            raise InputError("no optimised tree yet: run the Optimise tab and press 'Use in Explore'")
        paths = optimised
    elif choice == UPLOADED:
        if uploaded is None:
            raise InputError("no tree file uploaded yet")
        paths = uploaded
    elif choice in PRESETS:
        paths = preset_tree(choice)
    else:
        raise InputError(f"unknown tree choice {choice!r}")
    return validate_tree(paths, medusa.num_heads)


def choose_lookup(choice: str | None, default: LookupConfig | None) -> LookupConfig | None:
    """The context-lookup choice: the heads' recommendation, off ("0") or a chain length."""
    if choice in (None, LOOKUP_DEFAULT):
        return default
    if choice not in {value for _, value in LOOKUP_CHOICES}:
        raise InputError(f"unknown context lookup {choice!r}; one of {[v for _, v in LOOKUP_CHOICES]}")
    return lookup_or_none(int(choice))


MODES = [("greedy (lossless)", "greedy"), ("exact sampling", "exact"), ("typical (Medusa)", "typical")]


def decode_config(
    max_new_tokens: float, mode: str, temperature: float, threshold: float, alpha: float, seed: float,
    lookup: LookupConfig | None = None, top_p: float = 1.0,
) -> DecodeConfig:
    """The UI's settings as a DecodeConfig; bad values raise InputError in the user's words."""
    if mode not in {value for _, value in MODES}:
        raise InputError(f"unknown decoding mode {mode!r}; one of {[v for _, v in MODES]}")
    try:
        typical = TypicalConfig(float(temperature), float(threshold), float(alpha)) if mode == "typical" else None
        sampling = SamplingConfig(float(temperature), float(top_p)) if mode == "exact" else None
    except ValueError as err:
        raise InputError(str(err)) from err
    return DecodeConfig(max_new_tokens=int(max_new_tokens), typical=typical, seed=int(seed), lookup=lookup, sampling=sampling)


def checked_prompt(prompt: str | None) -> str:
    text = (prompt or "").strip()
    if not text:
        raise InputError("the prompt is empty; type a question or instruction")
    if len(text) > MAX_PROMPT_CHARS:
        raise InputError(f"the prompt has {len(text)} characters; the limit is {MAX_PROMPT_CHARS}")
    return text


def tree_summary(paths: Sequence[Path_], lookup: LookupConfig | None = None) -> str:
    depth = max((len(p) for p in paths), default=0)
    text = f"Tree: **{len(paths)}** candidate nodes + root, depth **{depth}**, {len(paths) + 1} tokens per verification pass"
    if lookup is None:
        return text
    return (
        f"{text}; context lookup adds up to **{lookup.tokens}** copied tokens ({len(paths) + 1 + lookup.tokens} at most) "
        f"when the last {lookup.min_ngram}-{lookup.max_ngram} tokens occurred before"
    )


def step_figure(run: RunView, step_number: float, colour_by: figures.ColourBy) -> tuple[Any, str]:
    index = min(max(int(step_number), 1), run.num_steps) - 1
    step = run.steps[index]
    view = figures.step_tree_view(step.nodes, step.accepted)
    title = f"Step {index + 1}: candidate tree, accepted path in orange"
    return figures.tree_figure(view, colour_by, title), step_caption(index, step, run.num_steps)


def record_download(record: GenerationRecord) -> gr.File:
    return gr.File(write_download("generation.json", json.dumps(record.to_json())), visible=True)


def finished_slider(num_steps: int) -> gr.Slider:
    """Steps 1..n (a slider needs minimum < maximum, so a one-step run gets a locked 1..2)."""
    return gr.Slider(minimum=1, maximum=max(num_steps, 2), value=num_steps, step=1, interactive=num_steps > 1)


def make_run(store: ModelStore):
    """The streaming Run handler (a generator; on ZeroGPU it runs inside a GPU slice)."""

    @gpu_task
    def run(
        prompt: str, max_new_tokens: float, mode: str, temperature: float, threshold: float, alpha: float,
        seed: float, tree_choice: str, colour_by: figures.ColourBy, compare: bool,
        key: ModelKey, uploaded: tuple[Path_, ...] | None, optimised: tuple[Path_, ...] | None,
        lookup: str = LOOKUP_DEFAULT, top_p: float = 1.0,
    ) -> Iterator[tuple]:
        with shown_in_page("cannot run"):
            text = checked_prompt(prompt)
            medusa = store.get(key)
            config = decode_config(max_new_tokens, mode, temperature, threshold, alpha, seed,
                                   choose_lookup(lookup, medusa.default_lookup), top_p)
            tree = choose_tree(tree_choice, medusa, uploaded, optimised)
            with store.cpu_share(medusa) as share:
                yield from stream_run(medusa, text, tree, config, colour_by, compare, share)

    return run


def stream_run(
    medusa: MedusaModel, prompt: str, tree: tuple[Path_, ...], config: DecodeConfig, colour_by: figures.ColourBy, compare: bool,
    share: Callable[[], int] = lambda: 0,
) -> Iterator[tuple]:
    """Outputs: text, tree plot, step caption, step slider, stats, stats plot, comparison, record file, run state.
    `share` sizes this thread's CPU threads before each step (Gradio may resume the run on another thread)."""
    skip = gr.skip()
    spans: list[str] = []
    steps: list[StepRecord] = []
    start = time.perf_counter()
    last_yield = 0.0
    record: GenerationRecord | None = None
    for item in stream_generation(medusa, prompt, tree, config):
        if isinstance(item, GenerationRecord):
            record = item
            break
        share()  # the next step runs on whichever thread resumes this generator
        spans += step_spans(len(steps), item)
        steps.append(item)
        now = time.perf_counter()
        if len(steps) == 1 or now - last_yield >= STREAM_INTERVAL_S:
            last_yield = now
            run = RunView(tuple(steps))
            figure, caption = step_figure(run, run.num_steps, colour_by)
            yield (text_html(spans, medusa.num_heads), figure, caption, skip,
                   live_stats_html(steps, now - start), skip, skip, skip, skip)
    assert record is not None
    run = RunView(tuple(steps))
    figure, caption = step_figure(run, run.num_steps, colour_by)
    stats = stats_html(record, len(tree))
    stats_plot = figures.stats_figure([s.accepted_length for s in steps], medusa.num_heads)
    comparison = stat_cards([], "Plain decoding of the same prompt is running for the comparison…") if compare else ""
    outputs = (text_html(spans, medusa.num_heads), figure, caption, finished_slider(run.num_steps),
               stats, stats_plot, comparison, record_download(record), run)
    yield outputs
    if compare:
        plain = generate(medusa, prompt, [], replace(config, lookup=None))
        greedy = config.mode == "greedy"
        divergence = first_divergence(medusa.base, record.prompt_tokens, record.tokens, plain.tokens) if greedy else None
        yield outputs[:6] + (comparison_html(record, plain, greedy, divergence),) + outputs[7:]  # whole: API callers keep the last yield


def show_step(step_number: float, colour_by: figures.ColourBy, run: RunView | None) -> tuple[Any, str]:
    """Redraw the tree of one step of the last run (the step slider)."""
    if run is None or run.num_steps == 0:
        raise gr.Error("Run a prompt first; the slider scrubs through its steps.")
    return step_figure(run, step_number, colour_by)


def recolour(step_number: float, colour_by: figures.ColourBy, run: RunView | None) -> tuple[Any, str]:
    """Redraw the shown step in the other colouring (nothing to do before a run)."""
    if run is None or run.num_steps == 0:
        return gr.skip(), gr.skip()
    return step_figure(run, step_number, colour_by)


def make_tree_mask(store: ModelStore):
    def tree_mask(
        tree_choice: str, key: ModelKey, uploaded: tuple[Path_, ...] | None, optimised: tuple[Path_, ...] | None,
        lookup_choice: str = LOOKUP_DEFAULT,
    ) -> tuple[Any, str]:
        """The tree attention mask of the chosen tree with its longest lookup chain, and its size."""
        with shown_in_page("cannot show that tree"):
            medusa = store.get(key)
            paths = choose_tree(tree_choice, medusa, uploaded, optimised)
            lookup = choose_lookup(lookup_choice, medusa.default_lookup)
        chain = lookup.tokens if lookup else 0
        mask = build_tree_buffers(paths, chain).ancestor_mask.numpy()
        return figures.mask_figure(mask, paths, chain), tree_summary(paths, lookup)

    return tree_mask


def tree_format(text: str) -> str:
    """Which export format a tree text is in: our JSON file, TensorRT-LLM's flag, vLLM's tuples or medusa_choices."""
    stripped = text.strip()
    if stripped.startswith("{"):
        return "json"
    if stripped.startswith("--medusa_choices"):
        return "trtllm"
    return "vllm" if "(" in stripped else "medusa"


def upload_tree(path: str | None) -> tuple[tuple[Path_, ...], gr.Dropdown, str]:
    """Read an uploaded tree (any export format but SGLang's) into the session."""
    with shown_in_page("invalid tree file"):
        text = upload_text(path, "tree")
        fmt = tree_format(text)
        paths = import_tree(text, fmt)
    return paths, gr.Dropdown(value=UPLOADED), f"Uploaded tree ({fmt} format) with {len(paths)} nodes."


def build_explore_tab(store: ModelStore, key_state: gr.State, optimised_state: gr.State) -> ExploreTab:
    with gr.Tab("Explore", id="explore"):  # states inside the tab: a Tabs child that is no tab breaks the tab bar
        uploaded_state = gr.State(None)
        run_state = gr.State(None, time_to_live=RUN_TTL_S)
        with gr.Row():
            with gr.Column(scale=2):
                prompt = gr.Textbox(label="Prompt (the chat template is applied)", value=EXAMPLE_PROMPT, lines=3, max_length=MAX_PROMPT_CHARS, elem_id="prompt")
                with gr.Row(equal_height=True):
                    run_button = gr.Button("Run", variant="primary", elem_id="run-button", scale=1)
                    stop_button = gr.Button("Stop", variant="stop", elem_id="stop-button", scale=0, min_width=70)
                    max_new_tokens = gr.Slider(1, 512, value=64, step=1, label="max new tokens", elem_id="max-new-tokens", scale=2)
                    compare = gr.Checkbox(label="also run plain decoding (speed-up, outputs identical?)", value=False, elem_id="compare", scale=2)
            with gr.Column(scale=1):
                tree_choice = gr.Dropdown(TREE_CHOICES, value=HEADS_DEFAULT, label="Candidate tree", elem_id="tree-choice")
                tree_file = gr.UploadButton("Upload a tree (JSON file or any export)", file_types=[".json", ".txt", ".py"], type="filepath", size="sm", elem_id="tree-upload")
                tree_info = gr.Markdown(label="tree", elem_id="tree-info")
        with gr.Accordion("Decoding settings", open=False):
            with gr.Row():
                mode = gr.Radio(MODES, value="greedy", label="decoding", elem_id="decoding-mode",
                                info="greedy is lossless; exact sampling keeps the model's distribution; typical is Medusa's (lossy)")
                seed = gr.Number(value=0, precision=0, label="seed")
                lookup = gr.Dropdown(
                    LOOKUP_CHOICES, value=LOOKUP_DEFAULT, label="context lookup",
                    info="also verify a chain copied from earlier text (red nodes)", elem_id="lookup-choice",
                )
            with gr.Row():
                temperature = gr.Slider(0.05, 2.0, value=0.7, step=0.05, label="temperature (sampling)")
                top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p (exact sampling)")
                threshold = gr.Slider(0.01, 1.0, value=0.09, step=0.01, label="posterior threshold ε (typical)")
                alpha = gr.Slider(0.01, 1.0, value=0.3, step=0.01, label="posterior alpha δ (typical)")
        output = gr.HTML(text_html([], 4), label="Output", elem_id="output-text")
        with gr.Row():
            with gr.Column(scale=3):
                tree_plot = gr.Plot(figures.empty_figure("Press Run to see each step's candidate tree"), label="Candidate tree", elem_id="tree-plot")
                with gr.Row():
                    step_slider = gr.Slider(1, 2, value=1, step=1, label="Step (scrub after the run)", interactive=False, elem_id="step-slider", scale=3)
                    colour_by = gr.Radio(["depth", "probability"], value="depth", label="node colour", scale=1)
                caption = gr.Markdown(label="step", elem_id="step-caption")
            with gr.Column(scale=2):
                stats = gr.HTML(stat_cards([("tokens / step", "–"), ("tokens / s", "–")], "statistics of the run appear here"), label="statistics", elem_id="stats")
                stats_plot = gr.Plot(figures.empty_figure("Acceptance statistics", 300), label="Acceptance", elem_id="stats-plot")
                comparison = gr.HTML(label="comparison with plain decoding", elem_id="comparison")
                record_file = gr.File(label="Generation record (JSON)", interactive=False, elem_id="record-file", height=80, visible=False)
        with gr.Accordion("Tree attention mask of the chosen tree", open=False):
            mask_plot = gr.Plot(label="Tree attention mask", elem_id="mask-plot")

    tree_mask = make_tree_mask(store)
    mask_inputs = [tree_choice, key_state, uploaded_state, optimised_state, lookup]
    run_event = run_button.click(
        make_run(store),
        inputs=[prompt, max_new_tokens, mode, temperature, threshold, alpha, seed, tree_choice, colour_by, compare, key_state,
                uploaded_state, optimised_state, lookup, top_p],
        outputs=[output, tree_plot, caption, step_slider, stats, stats_plot, comparison, record_file, run_state],
        api_name="generate",
    )
    stop_button.click(None, cancels=[run_event])
    # input: dragging, arrow keys and the number box (release would miss the keyboard); the latest value wins.
    step_slider.input(show_step, inputs=[step_slider, colour_by, run_state], outputs=[tree_plot, caption], api_name="show_step",
                      trigger_mode="always_last", show_progress="hidden")
    colour_by.input(recolour, inputs=[step_slider, colour_by, run_state], outputs=[tree_plot, caption], api_visibility="private")
    tree_choice.change(tree_mask, inputs=mask_inputs, outputs=[mask_plot, tree_info], api_name="tree_mask")
    lookup.change(tree_mask, inputs=mask_inputs, outputs=[mask_plot, tree_info], api_visibility="private")
    tree_file.upload(upload_tree, inputs=[tree_file], outputs=[uploaded_state, tree_choice, tree_info], api_name="upload_tree").then(
        tree_mask, inputs=mask_inputs, outputs=[mask_plot, tree_info], api_visibility="private"
    )
    return ExploreTab(tree_choice, tree_info, mask_plot, tree_mask, mask_inputs)
