"""Model box: choose the base model, heads and device; shows what is loaded, or why it is not."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from medusa_core import HeadsLoadError, MedusaModel, ModelLoadError

from .inputs import InputError, log, shown_in_page
from .names import display_name, model_display_name
from .store import DEFAULT, RANDOM_HEADS, ModelKey, ModelStore, normalise_key

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class ModelBox:
    status: gr.Markdown
    load_event: Any  # the Load button's event, for tabs that refresh after a load


HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
WHAT_MODEL = ("In 'base model' type default (the embedded SmolLM2-135M-Instruct), a model folder on this server, "
              "or a Hugging Face Hub id such as HuggingFaceTB/SmolLM2-135M-Instruct.")
WHAT_HEADS = ("In 'Medusa heads' type default (the heads shipped for the default model), random (untrained heads), "
              "a heads folder on this server, or a Hub id.")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def missing(kind: str, name: str, verb: str, what_to_type: str) -> str | None:
    """Why a model or heads name cannot be found, in the page's words (None: it may load)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return None
    if name.startswith(("/", "./", "../", "~")) or path.exists() or not HUB_ID.match(name):
        return f"The {kind} '{name}' {verb} not found: there is no such folder on this server. {what_to_type}"
    if hub_offline():
        return (f"The {kind} '{name}' {verb} not found: it is not a folder on this server, and this server has no access "
                f"to the Hugging Face Hub (offline), so it cannot be downloaded. {what_to_type}")
    return None


def check_key(key: ModelKey) -> None:
    """Refuse, before any loading, a model or heads that cannot be found (InputError in the page's words)."""
    if key.model != DEFAULT:
        reason = missing("base model", key.model, "was", WHAT_MODEL)
        if reason:
            raise InputError(reason)
        if key.heads == DEFAULT:
            raise InputError(f"The shipped heads belong to the embedded default model, not to '{key.model}'. {WHAT_HEADS}")
    if key.heads not in (DEFAULT, RANDOM_HEADS):
        reason = missing("Medusa heads", key.heads, "were", WHAT_HEADS)
        if reason:
            raise InputError(reason)


def load_failure(key: ModelKey, err: Exception) -> InputError:
    """A load that failed after the checks (a folder that is not a model, a Hub error), in the page's words."""
    kind, name, hint = ("Medusa heads", key.heads, WHAT_HEADS) if isinstance(err, HeadsLoadError) else ("base model", key.model, WHAT_MODEL)
    message = " ".join(str(err).split()) or type(err).__name__
    return InputError(f"The {kind} '{name}' could not be loaded: {message}. {hint}")


def load_checked(store: ModelStore, key: ModelKey) -> MedusaModel:
    check_key(key)
    try:
        return store.get(key)
    except (ModelLoadError, HeadsLoadError, OSError) as err:
        raise load_failure(key, err) from err


def describe(medusa: MedusaModel, key: ModelKey) -> str:
    base = medusa.base
    heads = "untrained (random)" if key.heads == RANDOM_HEADS else display_name(medusa.heads_name)
    return (
        f"**Loaded** `{model_display_name(medusa)}` · heads `{heads}` ({medusa.num_heads} heads) · "
        f"device **{base.device}** · {str(base.dtype).removeprefix('torch.')} · "
        f"default tree {len(medusa.default_tree)} nodes"
        + (f" · CPU matmul: {base.cpu_matmul}" if base.cpu_matmul else "")
    )


def make_load(store: ModelStore):
    def load_model(model: str, heads: str, device: str) -> tuple[ModelKey, str]:
        """Load (or reuse) a base model + heads for this session; errors leave the old one in use."""
        key = normalise_key(model, heads, device)
        with shown_in_page("cannot load that model"):
            medusa = load_checked(store, key)
        return key, describe(medusa, key)

    return load_model


def make_status(store: ModelStore):
    def model_status(key: ModelKey) -> str:
        """What this session uses (loads the default model on the first page load), or why nothing is loaded."""
        try:
            return describe(load_checked(store, key), key)
        except Exception as err:  # shown in the status box; require_model raises it as a page error too
            log.warning("no model loaded: %s", " ".join(str(err).split()))
            return f"**No model loaded**: {err} Choose another in the Model box."

    def require_model(key: ModelKey) -> None:
        """Fails (with the reason in the page) when the session's model cannot be loaded."""
        with shown_in_page("no model loaded"):
            load_checked(store, key)

    return model_status, require_model


def build_model_box(store: ModelStore, key_state: gr.State) -> ModelBox:
    default = store.default
    with gr.Accordion("Model", open=False, elem_id="model-box"):
        with gr.Row():
            model = gr.Textbox(default.model, label="base model", info="default = embedded SmolLM2-135M-Instruct; or a local folder / Hub id", scale=3, elem_id="model-name")
            heads = gr.Textbox(default.heads, label="Medusa heads", info="default = shipped heads; random = untrained; or a folder / Hub id", scale=3)
            device = gr.Dropdown(list(DEVICES), value=default.device, label="device", scale=1)
            load = gr.Button("Load", scale=1, elem_id="load-model")
    status = gr.Markdown("Loading the model…", elem_id="model-status")
    load_event = load.click(make_load(store), inputs=[model, heads, device], outputs=[key_state, status], api_name="load_model", concurrency_limit=1, concurrency_id="model-load")
    return ModelBox(status, load_event)
