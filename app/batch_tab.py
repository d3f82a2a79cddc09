"""Batch tab: decode several prompts at once, every row's tree of a step side by side, and the
throughput against batch size measured on this device."""

from __future__ import annotations

import html
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from medusa_core import DecodeConfig, GenerationRecord, MedusaModel, StepRecord, stream_rows
from medusa_core.bench.batching import run_batch_benchmark
from medusa_core.bench.methods import HF_GREEDY, MEDUSA, Method
from medusa_core.bench.report import batch_table
from medusa_core.bench.runner import BenchConfig, encode_prompts

from . import batch_figures
from .inputs import InputError, shown_in_page
from .runtime import MAX_PROMPT_CHARS, gpu_task
from .store import ModelKey, ModelStore

MAX_ROWS = 8
EXAMPLE_PROMPTS = "\n".join([
    "Explain in two sentences why the sky is blue.",
    "Write a haiku about autumn.",
    "List three uses of a paperclip.",
    "What is the capital of France? Answer in one sentence.",
])
MEASURE_BATCH_SIZES = ("1", "2", "4", "8")
MEASURE_TOKENS = 32
STREAM_INTERVAL_S = 0.25


@dataclass(frozen=True)
class BatchView:
    """The last batched run of a session: each row's steps, for the step slider."""

    prompts: tuple[str, ...]
    steps: tuple[tuple[StepRecord, ...], ...]  # [row][step]

    @property
    def num_steps(self) -> int:
        return max((len(s) for s in self.steps), default=0)


def batch_prompts(text: str | None) -> list[str]:
    """Non-empty lines, 1 to MAX_ROWS of them, each within the prompt limit."""
    prompts = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not prompts:
        raise InputError("write at least one prompt, one per line")
    if len(prompts) > MAX_ROWS:
        raise InputError(f"{len(prompts)} prompts: a batch here holds at most {MAX_ROWS}")
    for i, prompt in enumerate(prompts, 1):
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InputError(f"prompt {i} has {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,}")
    return prompts


def row_title(i: int, steps: tuple[StepRecord, ...], index: int) -> str:
    if index >= len(steps):
        return f"row {i + 1}: done after {len(steps)} steps"
    step = steps[index]
    return f"row {i + 1}: +{len(step.emitted)} token{'s' if len(step.emitted) != 1 else ''}"


def step_view(view: BatchView, step_number: float) -> tuple[Any, str]:
    """All rows' trees at one step (1-based) and a caption."""
    index = min(max(int(step_number), 1), max(view.num_steps, 1)) - 1
    steps = [s[index] if index < len(s) else None for s in view.steps]
    titles = [row_title(i, s, index) for i, s in enumerate(view.steps)]
    active = sum(s is not None for s in steps)
    caption = (f"Step {index + 1} of {view.num_steps}: {active} of {len(steps)} rows verified their trees in one pass; "
               "the accepted path of each is ringed in orange.")
    return batch_figures.row_trees_figure(steps, titles), caption


def rows_html(records: list[GenerationRecord | None], texts: list[str]) -> str:
    parts = []
    for i, text in enumerate(texts):
        record = records[i] if i < len(records) else None
        figure = (f" — {len(record.tokens)} tokens in {record.num_steps} steps ({record.tokens_per_step:.2f}/step)"
                  if record else "")
        # as HTML, so an answer that starts "1." stays text rather than becoming a Markdown list
        body = html.escape(text) if text else "…"
        parts.append(f"**Row {i + 1}**{figure}\n\n<div style='white-space: pre-wrap'>{body}</div>")
    return "\n\n".join(parts)


def make_batch_run(store: ModelStore):
    @gpu_task
    def run(text: str, max_new_tokens: float, lookup_on: bool, key: ModelKey) -> Iterator[tuple]:
        """Outputs: rows' text, trees figure, caption, step slider, batch state."""
        with shown_in_page("cannot run the batch"):
            prompts = batch_prompts(text)
            medusa = store.get(key)
            config = DecodeConfig(int(max_new_tokens), lookup=medusa.default_lookup if lookup_on else None)
            with store.cpu_share(medusa) as share:
                yield from stream_batch(medusa, prompts, config, share)

    return run


def stream_batch(medusa: MedusaModel, prompts: list[str], config: DecodeConfig, share) -> Iterator[tuple]:
    tokenizer = medusa.base.tokenizer
    steps: list[list[StepRecord]] = [[] for _ in prompts]
    tokens: list[list[int]] = [[] for _ in prompts]
    last = 0.0
    skip = gr.skip()
    for item in stream_rows(medusa, prompts, None, config):
        if isinstance(item, list):
            view = BatchView(tuple(prompts), tuple(tuple(s) for s in steps))
            figure, caption = step_view(view, view.num_steps)
            texts = [record.text for record in item]
            slider = gr.Slider(1, max(view.num_steps, 2), value=view.num_steps, step=1, interactive=view.num_steps > 1)
            yield rows_html(item, texts), figure, caption, slider, view
            return
        share()
        for row, step in item.items():
            steps[row].append(step)
            tokens[row].extend(step.emitted)
        now = time.perf_counter()
        if now - last >= STREAM_INTERVAL_S:
            last = now
            view = BatchView(tuple(prompts), tuple(tuple(s) for s in steps))
            figure, caption = step_view(view, view.num_steps)
            texts = [tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
            yield rows_html([], texts), figure, caption, skip, skip


def show_batch_step(step_number: float, view: BatchView | None) -> tuple[Any, str]:
    if view is None or view.num_steps == 0:
        raise gr.Error("Run a batch first; the slider scrubs through its steps.")
    return step_view(view, step_number)


def make_measure(store: ModelStore):
    @gpu_task
    def measure(text: str, sizes: list[str], lookup_on: bool, key: ModelKey, progress=gr.Progress()) -> tuple[Any, str]:
        """Throughput of batched plain greedy and batched Medusa at each chosen batch size."""
        with shown_in_page("cannot measure"):
            prompts = batch_prompts(text)
            batch_sizes = sorted(int(s) for s in sizes or [])
            if not batch_sizes:
                raise InputError("choose at least one batch size")
            medusa = store.get(key)
            lookup = medusa.default_lookup if lookup_on else None
            rows = (prompts * max(batch_sizes))[: max(batch_sizes)]  # enough prompts for the biggest batch
            ids = encode_prompts(medusa.base, rows, MEASURE_TOKENS, 16)
            methods = [
                Method("hf-greedy", HF_GREEDY),
                Method("medusa-default", MEDUSA, tree=medusa.default_tree, lookup=lookup),
            ]
            config = BenchConfig(max_new_tokens=MEASURE_TOKENS, warmup_tokens=4)

            def report(stage: str, done: int, total: int) -> None:
                progress((done, max(total, 1)), desc=stage)

            with store.cpu_share(medusa):
                result = run_batch_benchmark(medusa, ids, methods, batch_sizes, config, report).to_json()
        return batch_figures.throughput_figure(result), batch_table(result)

    return measure


def build_batch_tab(store: ModelStore, key_state: gr.State) -> None:
    with gr.Tab("Batch", id="batch"):
        view_state = gr.State(None)
        gr.Markdown("Several prompts decoded **at once**: each row has its own tree, accepted length, context lookup "
                    "and stop, and one forward pass verifies all rows' trees. Finished rows leave the batch.")
        with gr.Row():
            with gr.Column(scale=2):
                prompts = gr.Textbox(label=f"Prompts, one per line (up to {MAX_ROWS})", value=EXAMPLE_PROMPTS, lines=5,
                                     elem_id="batch-prompts")
            with gr.Column(scale=1):
                max_new_tokens = gr.Slider(1, 256, value=48, step=1, label="max new tokens",
                                           elem_id="batch-max-new-tokens")
                lookup_on = gr.Checkbox(value=True, label="context lookup (the heads' default)", elem_id="batch-lookup")
                run_button = gr.Button("Run batch", variant="primary", elem_id="batch-run")
        slider = gr.Slider(1, 2, value=1, step=1, label="step", interactive=False, elem_id="batch-step")
        caption = gr.Markdown(elem_id="batch-caption")
        trees = gr.Plot(label="every row's tree at this step", elem_id="batch-trees")
        texts = gr.Markdown(elem_id="batch-texts")
        with gr.Accordion("Throughput against batch size on this device", open=False):
            gr.Markdown(f"Batched plain greedy (`model.generate`, left padding) against batched Medusa with the "
                        f"heads' default tree, {MEASURE_TOKENS} new tokens a row, on the prompts above (repeated to "
                        "fill the batch).")
            with gr.Row():
                sizes = gr.CheckboxGroup(list(MEASURE_BATCH_SIZES), value=["1", "2", "4"], label="batch sizes",
                                         elem_id="batch-sizes")
                measure_button = gr.Button("Measure", elem_id="batch-measure")
            throughput = gr.Plot(label="throughput", elem_id="batch-throughput")
            table = gr.Markdown(elem_id="batch-table")
        run_button.click(make_batch_run(store), inputs=[prompts, max_new_tokens, lookup_on, key_state],
                         outputs=[texts, trees, caption, slider, view_state], api_name="run_batch")
        slider.release(show_batch_step, inputs=[slider, view_state], outputs=[trees, caption], api_name="batch_step")
        measure_button.click(make_measure(store), inputs=[prompts, sizes, lookup_on, key_state],
                             outputs=[throughput, table], api_name="measure_batches")
