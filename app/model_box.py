"""Model box: choose the base model, heads and device; shows what is loaded, or why it is not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from medusa_core import MedusaModel

from .inputs import shown_in_page
from .store import RANDOM_HEADS, ModelKey, ModelStore, normalise_key

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class ModelBox:
    status: gr.Markdown
    load_event: Any  # the Load button's event, for tabs that refresh after a load


def describe(medusa: MedusaModel, key: ModelKey) -> str:
    base = medusa.base
    heads = "untrained (random)" if key.heads == RANDOM_HEADS else medusa.heads_name
    return (
        f"**Loaded** `{base.name}` · heads `{heads}` ({medusa.num_heads} heads) · "
        f"device **{base.device}** · {str(base.dtype).removeprefix('torch.')} · "
        f"default tree {len(medusa.default_tree)} nodes"
        + (f" · CPU matmul: {base.cpu_matmul}" if base.cpu_matmul else "")
    )


def make_load(store: ModelStore):
    def load_model(model: str, heads: str, device: str) -> tuple[ModelKey, str]:
        """Load (or reuse) a base model + heads for this session; errors leave the old one in use."""
        key = normalise_key(model, heads, device)
        with shown_in_page(f"cannot load {key.describe()}"):
            try:
                medusa = store.get(key)
            except Exception as err:  # any failure of a user-named model must end as a message
                raise ValueError(str(err) or type(err).__name__) from err
        return key, describe(medusa, key)

    return load_model


def make_status(store: ModelStore):
    def model_status(key: ModelKey) -> str:
        """What this session uses (loads the default model on the first page load), or why nothing is loaded."""
        try:
            return describe(store.get(key), key)
        except Exception as err:  # shown in the status box; require_model raises it as a page error too
            return f"**No model loaded** ({key.describe()}): {err}. Choose another in the Model box."

    def require_model(key: ModelKey) -> None:
        """Fails (with the reason in the page) when the session's model cannot be loaded."""
        with shown_in_page("no model loaded"):
            store.get(key)

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
