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
    TreeError,
    TypicalConfig,
    build_tree_buffers,
    lookup_or_none,
    preset_tree,
    validate_tree,
)
from optimizer import LatencyProfile, import_tree

from . import figures
from .acceptance import acceptance
from .compare import comparison_view, run_second, running_note, second_label
from .heads_tab import shipped_table
from .inputs import InputError, shown_in_page, upload_text, user_error, write_download
from .prediction import prediction_note
from .runs import STOPPED, RunControl, RunView, decode_steps
from .runtime import MAX_PROMPT_CHARS, gpu_task
from .store import ModelKey, ModelStore
from .text import live_stats_html, plural, stat_cards, stats_html, step_caption, step_spans, text_html
from .trace import heads_in, read_trace, trace_note, trace_spans
from .why import why_rejected

Path_ = tuple[int, ...]

HEADS_DEFAULT = "heads-default"
OPTIMISED = "optimised"
UPLOADED = "uploaded"
PLAIN = "plain"  # truly plain decoding: no heads' tree and no context lookup, whatever the lookup setting
PRESETS = ("chain-4", "full-2x2", "full-2x3", "full-3x2", "mc_sim_7b_63", "chain-0")
PRESET_LABELS = {"chain-0": "chain-0 (no heads; the context lookup as set)"}
TREE_CHOICES: list[tuple[str, str]] = (
    [("heads' default tree", HEADS_DEFAULT)]
    + [(PRESET_LABELS.get(name, name), name) for name in PRESETS]
    + [("plain decoding (no heads, no lookup)", PLAIN)]
    + [("optimiser's latest tree", OPTIMISED), ("uploaded tree file", UPLOADED)]
)
# Short names of the tree choices, for the comparison's table and legend.
SHORT_LABELS = {HEADS_DEFAULT: "heads' default tree", PLAIN: "plain decoding", OPTIMISED: "optimiser's tree",
                UPLOADED: "uploaded tree"}
STREAM_INTERVAL_S = 0.25  # at most ~4 page updates a second while decoding (the first step at once)
RUN_TTL_S = 3600  # a session's last run (all its trees) is dropped an hour after it was stored
EXAMPLE_PROMPT = "Explain in two sentences why the sky is blue."
LOOKUP_DEFAULT = "heads-default"
LOOKUP_CHOICES: list[tuple[str, str]] = [("heads' default", LOOKUP_DEFAULT), ("off", "0")] + [
    (f"{n} tokens", str(n)) for n in (2, 3, 4, 6, 8, 10)
]


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


def check_tree_fits(paths: Sequence[Path_], medusa: MedusaModel) -> tuple[Path_, ...]:
    """The tree, if the loaded heads can run it; otherwise InputError saying why in the user's words."""
    tree = validate_tree(paths)
    depth = max((len(p) for p in tree), default=0)
    if depth > medusa.num_heads:
        raise InputError(
            f"this tree is {depth} levels deep but the loaded heads are only {medusa.num_heads}: each level is one "
            f"head's guess. Use a tree at most {medusa.num_heads} levels deep, or load more heads in the Model box"
        )
    widest = max((r for p in tree for r in p), default=-1) + 1
    if medusa.proposal is not None and widest > medusa.proposal.size:
        raise InputError(
            f"this tree asks for each head's guess of rank {widest - 1} but the loaded heads choose from only "
            f"{medusa.proposal.size} tokens"
        )
    return tree


def choose_tree(choice: str, medusa: MedusaModel, uploaded: Sequence[Path_] | None, optimised: Sequence[Path_] | None) -> tuple[Path_, ...]:
    """The session's chosen tree, checked against the loaded heads."""
    if choice == HEADS_DEFAULT:
        paths: Sequence[Path_] = medusa.default_tree
    elif choice == PLAIN:
        paths = ()
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
    return check_tree_fits(paths, medusa)


def choose_lookup(choice: str | None, default: LookupConfig | None, tree_choice: str = HEADS_DEFAULT) -> LookupConfig | None:
    """The context-lookup choice: the heads' recommendation, off ("0") or a chain length; always off
    for plain decoding."""
    if tree_choice == PLAIN:
        return None
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
        return DecodeConfig(max_new_tokens=int(max_new_tokens), typical=typical, seed=whole_number(seed, "seed"),
                            lookup=lookup, sampling=sampling)
    except ValueError as err:
        raise InputError(str(err)) from err


def whole_number(value: float | None, what: str) -> int:
    """An integer setting typed in a number box: 1.5 is refused, not silently rounded."""
    if value is None or float(value) != int(float(value)):
        raise InputError(f"the {what} must be a whole number, got {value}")
    return int(float(value))


def checked_prompt(prompt: str | None) -> str:
    text = (prompt or "").strip()
    if not text:
        raise InputError("the prompt is empty; type a question or instruction")
    if len(text) > MAX_PROMPT_CHARS:
        raise InputError(f"the prompt has {len(text):,} characters; the limit is {MAX_PROMPT_CHARS}: shorten it")
    return text


def tree_summary(paths: Sequence[Path_], lookup: LookupConfig | None = None, plain: bool = False) -> str:
    if plain:
        return "Plain decoding: **no heads' tree and no context lookup**, one token per verification pass"
    depth = max((len(p) for p in paths), default=0)
    text = (f"Tree: **{len(paths)}** candidate node{'' if len(paths) == 1 else 's'} + root, depth **{depth}**, "
            f"{plural(len(paths) + 1, 'token')} per verification pass")
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
    caption = step_caption(index, step, run.num_steps) + "\n\n" + why_rejected(run.steps, index, run.record)
    return figures.tree_figure(view, colour_by, title), caption


def record_download(record: GenerationRecord) -> gr.File:
    return gr.File(write_download("generation.json", json.dumps(record.to_json())), visible=True)


def finished_slider(num_steps: int) -> gr.Slider:
    """Steps 1..n (a slider needs minimum < maximum, so a one-step run gets a locked 1..2)."""
    return gr.Slider(minimum=1, maximum=max(num_steps, 2), value=num_steps, step=1, interactive=num_steps > 1)


def locked_slider() -> gr.Slider:
    """While a run streams: nothing to scrub yet (the previous run's steps are gone)."""
    return gr.Slider(minimum=1, maximum=2, value=1, step=1, interactive=False)


def special_tokens(medusa: MedusaModel) -> frozenset[int]:
    return frozenset(medusa.base.tokenizer.all_special_ids) | medusa.base.eos_token_ids


def tree_depth_of(tree: Sequence[Path_]) -> int:
    return max((len(p) for p in tree), default=0)


def make_run(store: ModelStore):
    """The streaming Run handler (a generator; on ZeroGPU it runs inside a GPU slice)."""

    @gpu_task
    def run(
        prompt: str, max_new_tokens: float, mode: str, temperature: float, threshold: float, alpha: float,
        seed: float, tree_choice: str, colour_by: figures.ColourBy, compare: bool,
        key: ModelKey, uploaded: tuple[Path_, ...] | None, optimised: tuple[Path_, ...] | None,
        lookup: str = LOOKUP_DEFAULT, top_p: float = 1.0, control: RunControl | None = None,
        profile: LatencyProfile | None = None, compare_with: str = PLAIN,
    ) -> Iterator[tuple]:
        control = control if control is not None else RunControl()
        run_id = control.start()
        with shown_in_page("cannot run"):
            text = checked_prompt(prompt)
            medusa = store.get(key)
            config = decode_config(max_new_tokens, mode, temperature, threshold, alpha, seed,
                                   choose_lookup(lookup, medusa.default_lookup, tree_choice), top_p)
            tree = choose_tree(tree_choice, medusa, uploaded, optimised)
            second = None
            if compare:  # checked before the first run: a bad second tree must not cost a whole run
                first_name = tree_label(tree_choice)
                second = SecondRun(choose_tree(compare_with, medusa, uploaded, optimised),
                                   replace(config, lookup=choose_lookup(lookup, medusa.default_lookup, compare_with)),
                                   (first_name, second_label(first_name, tree_label(compare_with))))
            with store.cpu_share(medusa) as share:
                yield from stream_run(medusa, text, tree, config, colour_by, second, share,
                                      lambda: control.should_stop(run_id), profile)

    return run


@dataclass(frozen=True)
class SecondRun:
    """The comparison's run: its tree, its settings (the lookup may differ) and both runs' names."""

    tree: tuple[Path_, ...]
    config: DecodeConfig
    labels: tuple[str, str]


def tree_label(choice: str) -> str:
    return SHORT_LABELS.get(choice, choice)


def stop_run(control: RunControl) -> None:
    """Stop this session's run after its current step (other sessions' runs go on)."""
    control.stop()


def streaming_outputs(medusa: MedusaModel, spans: list[str], steps: list[StepRecord], seconds: float,
                      colour_by: figures.ColourBy) -> tuple:
    """A page update while decoding; the first one also clears what belonged to the previous run."""
    skip = gr.skip()
    fresh = len(steps) == 1
    run = RunView(tuple(steps))
    figure, caption = step_figure(run, run.num_steps, colour_by)
    return (text_html(spans, medusa.num_heads), figure, caption, locked_slider() if fresh else skip,
            live_stats_html(steps, seconds),
            figures.empty_figure("Acceptance statistics appear when the run ends", 300) if fresh else skip,
            "" if fresh else skip, gr.File(value=None, visible=False) if fresh else skip, run,
            None if fresh else skip)


def finished_outputs(num_heads: int, spans: list[str], record: GenerationRecord, tree: Sequence[Path_],
                     colour_by: figures.ColourBy, lookup_on: bool, note: str, comparison: str) -> tuple:
    """The run's final state: every output belongs to this run (finished, stopped or opened from a file);
    the comparison state is cleared (a comparison run fills it in afterwards)."""
    run = RunView(tuple(record.steps), record)
    figure, caption = step_figure(run, run.num_steps, colour_by)
    credit = acceptance(record.steps, tree_depth_of(tree), num_heads, lookup_on)
    stats_plot = figures.stats_figure([s.accepted_length for s in record.steps], credit)
    return (text_html(spans, num_heads), figure, caption, finished_slider(run.num_steps),
            stats_html(record, len(tree), note), stats_plot, comparison, record_download(record), run, None)


def stream_run(
    medusa: MedusaModel, prompt: str, tree: tuple[Path_, ...], config: DecodeConfig, colour_by: figures.ColourBy,
    second: SecondRun | None = None, share: Callable[[], int] = lambda: 0,
    should_stop: Callable[[], bool] = lambda: False, profile: LatencyProfile | None = None,
) -> Iterator[tuple]:
    """Outputs: text, tree plot, step caption, step slider, stats, stats plot, comparison, record file, run state,
    comparison state. `second`: the comparison's run on the same prompt, after this one.
    `share` sizes this thread's CPU threads before each step (Gradio may resume the run on another thread);
    `should_stop` is checked after every step (the Stop button)."""
    special = special_tokens(medusa)
    spans: list[str] = []
    steps: list[StepRecord] = []
    start = time.perf_counter()
    last_yield = 0.0
    record: GenerationRecord | None = None
    for item in decode_steps(medusa, prompt, tree, config, should_stop):
        if isinstance(item, GenerationRecord):
            record = item
            break
        share()  # the next step runs on whichever thread resumes this generator
        spans += step_spans(len(steps), item, special)
        steps.append(item)
        now = time.perf_counter()
        if len(steps) == 1 or now - last_yield >= STREAM_INTERVAL_S:
            last_yield = now
            yield streaming_outputs(medusa, spans, steps, now - start, colour_by)
    assert record is not None  # decode_steps always ends with a record
    stopped = record.stop_reason == STOPPED
    note = prediction_note(record, tree, shipped_table(medusa), profile)
    comparison = running_note(second.labels[1], stopped) if second is not None else ""
    outputs = finished_outputs(medusa.num_heads, spans, record, tree, colour_by, config.lookup is not None, note,
                               comparison)
    yield outputs
    if second is not None and not stopped:
        text, result = run_second(medusa, record, second.tree, second.config, second.labels, should_stop)
        yield outputs[:6] + (text,) + outputs[7:9] + (result,)


def make_open_trace():
    def open_trace(path: str | None, colour_by: figures.ColourBy) -> tuple:
        """Re-open a saved generation.json for scrubbing: the text, trees, slider and stats come from the
        file; a file that is not a record is refused in plain words and the page keeps what it showed."""
        with shown_in_page("cannot open that record"):
            record = read_trace(path)
            tree = [tuple(p) for p in record.tree]
            lookup_on = bool(record.settings.get("lookup_tokens"))
            return finished_outputs(heads_in(record), trace_spans(record), record, tree, colour_by, lookup_on,
                                    trace_note(record), "")

    return open_trace


def show_step(step_number: float, colour_by: figures.ColourBy, run: RunView | None) -> tuple[Any, str]:
    """Redraw the tree of one step of the last run (the step slider)."""
    if run is None or run.num_steps == 0:
        raise user_error("Run a prompt first; the slider scrubs through its steps.")
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
            lookup = choose_lookup(lookup_choice, medusa.default_lookup, tree_choice)
        chain = lookup.tokens if lookup else 0
        mask = build_tree_buffers(paths, chain).ancestor_mask.numpy()
        return figures.mask_figure(mask, paths, chain), tree_summary(paths, lookup, tree_choice == PLAIN)

    return tree_mask


FORMAT_LABELS = {
    "json": "tree file (JSON)",
    "list": "JSON list of paths, as Medusa's medusa_choices",
    "medusa": "Medusa's medusa_choices",
    "trtllm": "TensorRT-LLM's --medusa_choices",
    "vllm": "vLLM's speculative_token_tree",
}
TREE_FILE_HELP = (
    "a tree file is our JSON tree file, a list of paths such as [[0], [0, 0], [1]] (Medusa's medusa_choices), "
    "TensorRT-LLM's --medusa_choices=\"[[0], [0, 0]]\" or vLLM's [(0,), (0, 0)]"
)


def tree_format(text: str) -> str:
    """Which export format a tree text is in: our JSON file, TensorRT-LLM's flag, vLLM's tuples or medusa_choices."""
    stripped = text.strip()
    if stripped.startswith("{"):
        return "json"
    if stripped.startswith("--medusa_choices"):
        return "trtllm"
    return "vllm" if "(" in stripped else "medusa"


def format_label(text: str, fmt: str) -> str:
    """The format in words; a medusa_choices text that is also JSON is named a JSON list of paths."""
    if fmt == "medusa":
        try:
            json.loads(text)
            return FORMAT_LABELS["list"]
        except json.JSONDecodeError:
            pass
    return FORMAT_LABELS[fmt]


def looks_like_a_tree(text: str) -> bool:
    """Could the text be one of the tree formats at all (before the format's own checks)?"""
    stripped = text.strip().removeprefix("--medusa_choices").lstrip("=\"' ")
    if "=" in stripped.split("[", 1)[0]:  # name = [...], as a Python file writes it
        stripped = stripped.split("=", 1)[1].strip()
    return stripped[:1] in ("{", "[", "(")


def read_tree_file(text: str) -> tuple[tuple[Path_, ...], str]:
    """The tree in an uploaded file, and its format's name; InputError in plain words otherwise."""
    if not looks_like_a_tree(text):
        raise InputError(f"this file is not a tree: {TREE_FILE_HELP}")
    fmt = tree_format(text)
    try:
        paths = import_tree(text, fmt)
    except TreeError as err:
        raise InputError(f"this {FORMAT_LABELS[fmt]} is not a valid tree: {err}") from err
    return paths, format_label(text, fmt)


def make_upload_tree(store: ModelStore):
    def upload_tree(path: str | None, key: ModelKey) -> tuple[tuple[Path_, ...], gr.Dropdown, str]:
        """Read an uploaded tree (any export format but SGLang's) into the session, if the loaded heads
        can run it; otherwise one message, and the previous tree choice stays."""
        with shown_in_page("cannot use that tree file"):
            paths, label = read_tree_file(upload_text(path, "tree"))
            check_tree_fits(paths, store.get(key))
        return paths, gr.Dropdown(value=UPLOADED), f"Uploaded tree ({label}) with {plural(len(paths), 'node')}."

    return upload_tree


SETTINGS_HELP = """
- **greedy (lossless)**: each step keeps the longest path of the tree whose every token is the model's own top choice;
  the output is exactly what plain greedy decoding writes, only in fewer passes.
- **exact sampling**: at each node the walk reaches, one token is drawn from the model's distribution (temperature, then
  top-p); if a child carries it the walk moves on, otherwise the drawn token is the step's last. The output is
  distributed exactly as token-by-token sampling.
- **typical (Medusa)**: a candidate token x is accepted when the model gives it probability
  p(x) > min(ε, δ · exp(−H)), H being the entropy of the model's distribution there. Raising the **threshold ε** or the
  **alpha δ** accepts fewer guesses (closer to the model's own choices); lowering them accepts more (faster, further
  from the model). Lossy by design; Medusa's defaults are ε = 0.09, δ = 0.3.
- **temperature** flattens (> 1) or sharpens (< 1) the model's distribution before sampling; **top-p** keeps the
  smallest set of likeliest tokens whose probabilities add up to p.
- **context lookup**: each step also verifies, under the root, up to N tokens copied from what followed the latest
  earlier occurrence of the last 2-3 tokens (the n-grams) in the prompt or the answer so far. Copied nodes are red;
  greedy decoding stays lossless because the model still checks every copied token.
- **node colour: probability**: a head's node is coloured by the probability its head gave that token (0 dark violet,
  1 yellow); the root by the model's own probability. Copied nodes stay red: they have no head probability.
- **seed**: a whole number; the same seed and settings give the same sampled output.
- **compare**: after the run, the same prompt runs again with the "Compare with" tree (same settings; plain decoding
  also turns the context lookup off); a figure shows both runs' accepted depth per step, a table their speed.
- **Why rejected** (under the tree): at the step's first wrong node, the token the model chose instead, its probability
  and its rank in that head's list, or that it was not among the head's guesses at all.
"""

PROMPT_LENGTH_JS = f"""(text) => {{
  const n = (text || "").trim().length;
  return n > {MAX_PROMPT_CHARS}
    ? `⚠ ${{n.toLocaleString("en")}} characters: over the limit of {MAX_PROMPT_CHARS:,}. Shorten the prompt to run it.`
    : "";
}}"""  # in the page only: no server round trip per keystroke


def build_explore_tab(store: ModelStore, key_state: gr.State, optimised_state: gr.State, profile_state: gr.State) -> ExploreTab:
    with gr.Tab("Explore", id="explore"):  # states inside the tab: a Tabs child that is no tab breaks the tab bar
        uploaded_state = gr.State(None)
        run_state = gr.State(None, time_to_live=RUN_TTL_S)
        control_state = gr.State(RunControl())  # deep-copied: each session gets its own
        compare_state = gr.State(None, time_to_live=RUN_TTL_S)  # the last run's Comparison, for its figure
        with gr.Row():
            with gr.Column(scale=2):
                # No max_length: the text box would cut a long paste without a word; the run says what the limit is.
                prompt = gr.Textbox(label="Prompt (the chat template is applied)", value=EXAMPLE_PROMPT, lines=3, elem_id="prompt")
                prompt_note = gr.Markdown("", elem_id="prompt-note")
                with gr.Row(equal_height=True):
                    run_button = gr.Button("Run", variant="primary", elem_id="run-button", scale=1)
                    stop_button = gr.Button("Stop", variant="stop", elem_id="stop-button", scale=0, min_width=70)
                    max_new_tokens = gr.Slider(1, 512, value=64, step=1, label="max new tokens", elem_id="max-new-tokens", scale=2, min_width=220)
            with gr.Column(scale=1):
                tree_choice = gr.Dropdown(TREE_CHOICES, value=HEADS_DEFAULT, label="Candidate tree", elem_id="tree-choice")
                tree_file = gr.UploadButton("Upload a tree (JSON file or any export)", file_types=[".json", ".txt", ".py"], type="filepath", size="sm", elem_id="tree-upload")
                tree_info = gr.Markdown(label="tree", elem_id="tree-info")
                # Beside the run's own tree: the second tree the same prompt runs with after the run.
                compare = gr.Checkbox(label="compare: after the run, run the same prompt with a second tree", value=False,
                                      elem_id="compare")
                compare_with = gr.Dropdown(TREE_CHOICES, value=PLAIN, elem_id="compare-with", label="Compare with")
        with gr.Accordion("Decoding settings", open=False, elem_id="decoding-settings"):
            with gr.Row():
                mode = gr.Radio(MODES, value="greedy", label="decoding", elem_id="decoding-mode",
                                info="greedy is lossless; exact sampling keeps the model's distribution; typical is Medusa's (lossy)")
                seed = gr.Number(value=0, precision=None, step=1, label="seed (a whole number)", elem_id="seed")
                lookup = gr.Dropdown(
                    LOOKUP_CHOICES, value=LOOKUP_DEFAULT, label="context lookup",
                    info="also verify a chain copied from earlier text (red nodes)", elem_id="lookup-choice",
                )
            with gr.Row():
                temperature = gr.Slider(0.05, 2.0, value=0.7, step=0.05, label="temperature (sampling)")
                top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p (exact sampling)")
                threshold = gr.Slider(0.01, 1.0, value=0.09, step=0.01, label="posterior threshold ε (typical)")
                alpha = gr.Slider(0.01, 1.0, value=0.3, step=0.01, label="posterior alpha δ (typical)")
            with gr.Accordion("What do these settings mean?", open=False, elem_id="settings-help"):
                gr.Markdown(SETTINGS_HELP)
        output = gr.HTML(text_html([], 4), label="Output", elem_id="output-text")
        with gr.Row():
            with gr.Column(scale=3, elem_id="step-view"):
                tree_plot = gr.Plot(figures.empty_figure("Press Run to see each step's candidate tree"), label="Candidate tree", elem_id="tree-plot")
                with gr.Row():
                    step_slider = gr.Slider(1, 2, value=1, step=1, label="Step (scrub after the run)", interactive=False, elem_id="step-slider", scale=3, min_width=260)
                    colour_by = gr.Radio(["depth", "probability"], value="depth", label="node colour", scale=1)
                caption = gr.Markdown(label="step", elem_id="step-caption")
            with gr.Column(scale=2, elem_id="run-view"):
                stats = gr.HTML(stat_cards([("tokens / step", "–"), ("tokens / s", "–")], "statistics of the run appear here"), label="statistics", elem_id="stats")
                stats_plot = gr.Plot(figures.empty_figure("Acceptance statistics", 300), label="Acceptance", elem_id="stats-plot")
                comparison = gr.HTML(label="comparison with a second run", elem_id="comparison")
                compare_plot = gr.Plot(label="Comparison", elem_id="compare-plot", visible=False)
                record_file = gr.File(label="Generation record (JSON)", interactive=False, elem_id="record-file", height=80, visible=False)
                record_upload = gr.UploadButton("Open a saved generation.json", file_types=[".json"], type="filepath",
                                                size="sm", elem_id="record-upload")
        with gr.Accordion("Tree attention mask of the chosen tree", open=False):
            mask_plot = gr.Plot(label="Tree attention mask", elem_id="mask-plot")

    tree_mask = make_tree_mask(store)
    mask_inputs = [tree_choice, key_state, uploaded_state, optimised_state, lookup]
    prompt.change(None, inputs=[prompt], outputs=[prompt_note], js=PROMPT_LENGTH_JS, api_visibility="private")
    run_outputs = [output, tree_plot, caption, step_slider, stats, stats_plot, comparison, record_file, run_state,
                   compare_state]
    run_button.click(
        make_run(store),
        inputs=[prompt, max_new_tokens, mode, temperature, threshold, alpha, seed, tree_choice, colour_by, compare, key_state,
                uploaded_state, optimised_state, lookup, top_p, control_state, profile_state, compare_with],
        outputs=run_outputs,
        api_name="generate",
    ).success(comparison_view, inputs=[compare_state], outputs=[compare_plot], api_name="comparison")
    # The record's own slider, trees, text and stats; a refused file leaves the page as it was (status on the button).
    record_upload.upload(make_open_trace(), inputs=[record_upload, colour_by], outputs=run_outputs,
                         api_name="open_record", show_progress_on=[record_upload]).success(
        comparison_view, inputs=[compare_state], outputs=[compare_plot], api_visibility="private")
    # Its own slot (no concurrency limit): a Stop must not queue behind the runs it is meant to stop.
    stop_button.click(stop_run, inputs=[control_state], api_name="stop", concurrency_limit=None, show_progress="hidden")
    # input: dragging, arrow keys and the number box (release would miss the keyboard); the latest value wins.
    step_slider.input(show_step, inputs=[step_slider, colour_by, run_state], outputs=[tree_plot, caption], api_name="show_step",
                      trigger_mode="always_last", show_progress="hidden")
    colour_by.input(recolour, inputs=[step_slider, colour_by, run_state], outputs=[tree_plot, caption], api_visibility="private")
    # .input, not .change: an upload or 'Use in Explore' sets the choice and redraws the mask itself, once.
    tree_choice.input(tree_mask, inputs=mask_inputs, outputs=[mask_plot, tree_info], api_name="tree_mask")
    lookup.input(tree_mask, inputs=mask_inputs, outputs=[mask_plot, tree_info], api_visibility="private")
    # Status on the button: a refused file must leave the tree choice and its summary as they were (no error overlay).
    tree_file.upload(make_upload_tree(store), inputs=[tree_file, key_state], outputs=[uploaded_state, tree_choice, tree_info],
                     api_name="upload_tree", show_progress_on=[tree_file]).success(tree_mask, inputs=mask_inputs, outputs=[mask_plot, tree_info], api_visibility="private")
    return ExploreTab(tree_choice, tree_info, mask_plot, tree_mask, mask_inputs)
