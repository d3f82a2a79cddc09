"""Names as the page shows them: a folder's own name, not the server's full path to it."""

from __future__ import annotations

from pathlib import PurePath

from medusa_core import MedusaModel

EMBEDDED = "embedded"


def display_name(name: str) -> str:
    """'/root/.cache/x/SmolLM2-135M-Instruct' -> 'SmolLM2-135M-Instruct'; a Hub id ('org/name') stays."""
    if name.startswith(("/", "~", ".")) or "\\" in name:
        return PurePath(name).name or name
    return name


def model_display_name(medusa: MedusaModel) -> str:
    """The base model as the page names it: the Hub id of the embedded default, else the folder's name."""
    base = medusa.base
    if base.model_id != base.name:  # the embedded default, converted into a cache folder
        return f"{base.model_id} ({EMBEDDED})"
    return display_name(base.name)
