"""Medusa Explorer's Gradio UI: one module per tab, figures in `figures`, no model code here.

`build_app()` creates the Blocks (tests pass their own loader or store); `app.py` launches it.
"""

from __future__ import annotations

import gradio as gr

from .batch_tab import build_batch_tab
from .explore import build_explore_tab
from .heads_tab import build_heads_tab
from .model_box import build_model_box, make_status
from .optimise import build_optimise_tab
from .runtime import QUEUE_MAX_SIZE, concurrency_limit, launch_kwargs
from .store import Loader, ModelKey, ModelStore, load_key

__all__ = ["Loader", "ModelKey", "ModelStore", "build_app", "launch_kwargs", "load_key"]

INTRO = """# Medusa Explorer
Medusa heads guess several future tokens at once; the base model verifies a whole **tree** of guesses in
one forward pass and keeps the longest path it agrees with. Run a prompt to watch each step's tree,
measure the heads' accuracy, and search for the best tree for this hardware."""


def build_app(medusa_loader: Loader | None = None, store: ModelStore | None = None) -> gr.Blocks:
    """The whole explorer. Models load through `medusa_loader` (default: medusa_core.load_medusa)
    and are shared read-only by all sessions; everything else a user does lives in gr.State."""
    store = store or ModelStore(medusa_loader or load_key)
    with gr.Blocks(title="Medusa Explorer", analytics_enabled=False, delete_cache=(1800, 3600)) as demo:
        gr.Markdown(INTRO)
        key_state = gr.State(store.default)
        optimised_state = gr.State(None)  # the Optimise tab's latest tree, for Explore
        accuracy_state = gr.State(None)  # the Heads tab's accuracy table, for Optimise
        profile_state = gr.State(None)  # the Optimise tab's latency profile, for Explore's predicted speed
        model_box = build_model_box(store, key_state)
        with gr.Tabs() as tabs:
            explore = build_explore_tab(store, key_state, optimised_state, profile_state)
            heads = build_heads_tab(store, key_state, accuracy_state)
            build_optimise_tab(store, key_state, accuracy_state, optimised_state, profile_state, explore, tabs)
            build_batch_tab(store, key_state)
        model_status, require_model = make_status(store)
        page_load = demo.load(model_status, inputs=[key_state], outputs=[model_box.status], api_visibility="private")
        model_ready = page_load.then(require_model, inputs=[key_state], api_visibility="private")
        for ready in (model_ready, model_box.load_event):
            explore.refresh_mask(ready)
            heads.refresh_after(ready)
    demo.queue(default_concurrency_limit=concurrency_limit(), max_size=QUEUE_MAX_SIZE)
    return demo
