"""Medusa Explorer: `python app.py` opens the UI on the embedded default model (also the Space's app_file)."""

from __future__ import annotations

import os

# Before gradio is imported: no usage analytics, no hub telemetry unless the user opts in.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from app import ModelStore, build_app, launch_kwargs, load_key  # noqa: E402


def main() -> None:
    store = ModelStore(load_key)
    store.get()  # load the default model before the first visitor arrives (a Space's cold start)
    build_app(store=store).launch(**launch_kwargs())


if __name__ == "__main__":
    main()
