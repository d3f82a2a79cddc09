"""Heads tab: each head's top-k accuracy as a heatmap, and calibration on a prompt set."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from medusa_core import MedusaModel
from medusa_core.training.distill_data import read_prompt_file
from optimizer import REFERENCE_TABLES, AccuracyError, AccuracyTable, load_accuracy_table, resolve_accuracy, table_from_json

from . import figures
from .inputs import InputError, shown_in_page, upload_json, upload_text, write_download
from .runtime import gpu_task
from .names import display_name
from .store import ModelKey, ModelStore

PROMPT_DIR = Path(__file__).resolve().parent.parent / "data" / "prompts"
UPLOADED_PROMPTS = "uploaded"
SHIPPED = "shipped"  # the table stored beside the loaded heads
SESSION = "session"  # this session's calibrated or uploaded table
MAX_CALIBRATION_PROMPTS = 64
SMALL_SAMPLE_HALF_WIDTH = 0.05  # warn when a head's top-1 95% interval is wider than +-0.05 (a few hundred positions)
Z95 = 1.96
REFERENCE_CHOICES = [(f"reference: Medusa-1 on {name} (paper)", f"reference:{name}") for name in REFERENCE_TABLES]  # resolve_accuracy specs
TABLE_CHOICES = [("table shipped with the loaded heads", SHIPPED), ("this session's calibrated or uploaded table", SESSION),
                 *REFERENCE_CHOICES]


@dataclass
class HeadsTab:
    heatmap: gr.Plot
    info: gr.Markdown
    source: gr.Dropdown
    refresh: Any  # handler: (key) -> (session table, source, heatmap, info)
    key_state: gr.State
    accuracy_state: gr.State

    def refresh_after(self, event: Any) -> None:
        """Show the loaded heads' shipped table after `event` succeeds (page load, model load)."""
        event.success(self.refresh, inputs=[self.key_state], outputs=[self.accuracy_state, self.source, self.heatmap, self.info],
                      api_visibility="private")


def builtin_prompt_sets() -> list[str]:
    return sorted(p.stem for p in PROMPT_DIR.glob("*.txt"))


def shipped_table(medusa: MedusaModel) -> AccuracyTable | None:
    """The accuracy table stored beside the heads (accuracy.json or *accuracy*.json), if any."""
    if medusa.heads_folder is None:
        return None
    folder = Path(medusa.heads_folder)
    for path in [folder / "accuracy.json", *sorted(folder.glob("*accuracy*.json"))]:
        if path.is_file():
            return load_accuracy_table(path)
    return None


def wilson_interval(share: float, samples: int) -> tuple[float, float]:
    """95% Wilson score interval of a measured share (stays inside [0, 1] on small samples)."""
    if samples <= 0:
        return 0.0, 1.0
    centre = (share + Z95**2 / (2 * samples)) / (1 + Z95**2 / samples)
    half = Z95 * math.sqrt(share * (1 - share) / samples + Z95**2 / (4 * samples**2)) / (1 + Z95**2 / samples)
    return max(0.0, centre - half), min(1.0, centre + half)


def sample_warning(table: AccuracyTable) -> str:
    """A warning when the table's positions are too few to trust its top-1 accuracies, else ''."""
    if not table.samples:
        return ""
    widest = max((hi - lo) / 2 for lo, hi in (wilson_interval(row[0], table.samples) for row in table.acc))
    if widest <= SMALL_SAMPLE_HALF_WIDTH:
        return ""
    return (f"<br>⚠ **Small sample**: {table.samples} positions, so top-1 accuracies are uncertain by up to "
            f"±{widest:.2f} (95%). Trees optimised from it may not hold up: calibrate on more prompts or tokens, "
            f"or optimise with the shipped table.")


def table_info(table: AccuracyTable, origin: str) -> str:
    if table.samples:
        intervals = [wilson_interval(row[0], table.samples) for row in table.acc]
        top1 = ", ".join(f"{row[0]:.2f} ({lo:.2f}-{hi:.2f})" for row, (lo, hi) in zip(table.acc, intervals))
        samples = f"{table.samples} positions"
        heading = "top-1 per head (95% interval)"
    else:
        top1 = ", ".join(f"{row[0]:.2f}" for row in table.acc)
        samples, heading = "sample count not published", "top-1 per head"
    source = f"<br><small>{table.source}</small>" if table.source else ""
    return (f"**{origin}** · {table.num_heads} heads · top_k {table.top_k} · {samples} · {heading}: {top1}"
            + sample_warning(table) + source)


def table_view(table: AccuracyTable, origin: str, cumulative: bool) -> tuple[AccuracyTable, Any, str]:
    title = "Top-k accuracy per head" if cumulative else "Per-rank accuracy per head"
    return table, figures.accuracy_heatmap(table.acc, cumulative, title), table_info(table, origin)


def no_table_view(message: str) -> tuple[None, Any, str]:
    return None, figures.empty_figure(message, 260), message


def load_prompts(prompt_set: str, upload: str | None, count: float) -> list[str]:
    if prompt_set == UPLOADED_PROMPTS:
        prompts = [line.strip() for line in upload_text(upload, "prompt").splitlines() if line.strip()]
        if not prompts:
            raise InputError("the uploaded prompt file has no prompts (one prompt per line)")
    elif prompt_set in builtin_prompt_sets():
        prompts = read_prompt_file(PROMPT_DIR / f"{prompt_set}.txt")
    else:
        raise InputError(f"unknown prompt set {prompt_set!r}")
    return prompts[: int(count)]


def upload_accuracy(path: str | None) -> AccuracyTable:
    """A medusa-accuracy/1 file from the user, validated."""
    data = upload_json(path, "accuracy table")
    try:
        return table_from_json(data)
    except AccuracyError as err:
        raise InputError(str(err)) from err


def no_session_table() -> str:
    return "This session has no calibrated or uploaded table yet: run a calibration or upload one."


def last_good_note() -> str:
    """After a failed calibration or upload: nothing changed, and what is still shown."""
    return "✗ Nothing changed (the message says why): the heatmap still shows the last good table."


def make_handlers(store: ModelStore):
    def loaded_table(key: ModelKey) -> tuple[MedusaModel, AccuracyTable | None]:
        with shown_in_page("cannot read the heads' accuracy table"):
            medusa = store.get(key)
            return medusa, shipped_table(medusa)

    def show_loaded(key: ModelKey) -> tuple[None, Any, Any, str]:
        """The loaded heads' shipped table (page load, model load); a calibrated table of other heads is dropped."""
        medusa, table = loaded_table(key)
        if table is None:
            _, heatmap, info = no_table_view("No measured table ships with these heads: run a calibration, upload a table or pick a reference.")
        else:
            _, heatmap, info = table_view(table, f"measured table shipped with {display_name(medusa.heads_name)}", False)
        return None, gr.Dropdown(value=SHIPPED), heatmap, info

    def show_table(source: str, cumulative: bool, session_table: AccuracyTable | None, key: ModelKey) -> tuple[Any, str]:
        """Draw the shipped table, the session's (calibrated or uploaded) table or a reference table."""
        if source == SHIPPED:
            medusa, table = loaded_table(key)
            if table is None:
                return no_table_view("No measured table ships with these heads.")[1:]
            return table_view(table, f"measured table shipped with {display_name(medusa.heads_name)}", cumulative)[1:]
        if source == SESSION:
            if session_table is None:
                return no_table_view(no_session_table())[1:]
            return table_view(session_table, "this session's table", cumulative)[1:]
        with shown_in_page("cannot show that table"):
            return table_view(resolve_accuracy(source), "reference table", cumulative)[1:]

    @gpu_task
    def calibrate_heads(prompt_set: str, upload: str | None, count: float, max_new_tokens: float, top_k: float,
                        key: ModelKey, progress: gr.Progress = gr.Progress()) -> tuple[AccuracyTable, Any, str, Any, Any, str]:
        """Measure the loaded heads' accuracy on a prompt set; the result becomes this session's table
        (the shipped one stays selectable)."""
        from medusa_core.training.calibration import calibrate

        with shown_in_page("calibration failed"):
            prompts = load_prompts(prompt_set, upload, count)
            medusa = store.get(key)
            progress((0, len(prompts)), desc="calibrating", unit="prompts")
            with store.cpu_share(medusa):
                table = calibrate(medusa, prompts, int(max_new_tokens), int(top_k),
                                  progress=lambda done, total: progress((done, total), desc="calibrating", unit="prompts"))
            data = table.to_json()
        table, heatmap, info = table_view(table, f"calibrated on {len(prompts)} prompts of '{prompt_set}'", False)
        return (table, heatmap, info, gr.Dropdown(value=SESSION),
                gr.File(write_download("accuracy.json", json.dumps(data)), visible=True), "")

    def upload_table(path: str | None, cumulative: bool) -> tuple[AccuracyTable, Any, str, Any, str]:
        """A medusa-accuracy/1 file becomes this session's table."""
        with shown_in_page("invalid accuracy table"):
            table = upload_accuracy(path)
        table, heatmap, info = table_view(table, "uploaded table", cumulative)
        return table, heatmap, info, gr.Dropdown(value=SESSION), ""

    return show_loaded, show_table, calibrate_heads, upload_table


def build_heads_tab(store: ModelStore, key_state: gr.State, accuracy_state: gr.State) -> HeadsTab:
    show_loaded, show_table, calibrate_heads, upload_table = make_handlers(store)
    with gr.Tab("Heads", id="heads"):
        with gr.Row():
            with gr.Column(scale=3):
                source = gr.Dropdown(TABLE_CHOICES, value=SHIPPED, label="accuracy table", elem_id="accuracy-source")
                cumulative = gr.Checkbox(False, label="show cumulative top-k accuracy")
                info = gr.Markdown(label="table", elem_id="accuracy-info")
                heatmap = gr.Plot(figures.empty_figure("Loading the heads' accuracy table…", 260), label="Per-head accuracy", elem_id="accuracy-heatmap")
            with gr.Column(scale=2):
                gr.Markdown("### Calibrate the loaded heads\nDecode a prompt set greedily and record where each head ranks the tokens the model really produced.")
                prompt_set = gr.Dropdown([*builtin_prompt_sets(), UPLOADED_PROMPTS], value="calibration", label="prompt set")
                prompt_file = gr.File(label="prompts to upload (.txt, one per line; choose 'uploaded' above)", file_types=[".txt"], type="filepath", height=120)
                with gr.Row():
                    count = gr.Slider(1, MAX_CALIBRATION_PROMPTS, value=4, step=1, label="prompts", elem_id="calibration-prompts")
                    max_new_tokens = gr.Slider(8, 256, value=32, step=8, label="new tokens per prompt", elem_id="calibration-tokens")
                    top_k = gr.Slider(1, 20, value=10, step=1, label="top_k")
                calibrate_button = gr.Button("Run calibration", variant="primary", elem_id="calibrate-button")
                # Progress and failures show here, so a failed action never covers the heatmap of the last good table.
                note = gr.Markdown("", elem_id="accuracy-note", min_height=40)
                table_file = gr.File(label="accuracy table (medusa-accuracy/1)", interactive=False, height=80, visible=False)
                table_upload = gr.UploadButton("Upload an accuracy table (medusa-accuracy/1 JSON)", file_types=[".json"], type="filepath", size="sm", elem_id="accuracy-upload")
    outputs = [accuracy_state, heatmap, info]
    gr.on([source.input, cumulative.input], show_table, inputs=[source, cumulative, accuracy_state, key_state], outputs=[heatmap, info],
          api_name="accuracy_table")
    calibration = calibrate_button.click(calibrate_heads, inputs=[prompt_set, prompt_file, count, max_new_tokens, top_k, key_state],
                                         outputs=[*outputs, source, table_file, note], api_name="calibrate", concurrency_id="heavy",
                                         show_progress_on=[note])
    upload = table_upload.upload(upload_table, inputs=[table_upload, cumulative], outputs=[*outputs, source, note], api_name="upload_accuracy",
                                 show_progress_on=[note])
    for event in (calibration, upload):
        event.failure(last_good_note, outputs=[note], api_visibility="private")
    prompt_file.upload(lambda: gr.Dropdown(value=UPLOADED_PROMPTS), outputs=[prompt_set], api_visibility="private")
    return HeadsTab(heatmap, info, source, show_loaded, key_state, accuracy_state)
