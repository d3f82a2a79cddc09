"""Download buttons for the optimised tree: one per export format of the optimizer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import gradio as gr

from medusa_core.trees import tree_to_json

from .inputs import write_download

if TYPE_CHECKING:
    from .optimise import OptimisedTree


@dataclass(frozen=True)
class ExportFormat:
    key: str
    label: str
    filename: str
    render: Callable[["OptimisedTree"], str]  # raises ValueError when the engine cannot take the tree


def tree_file(tree: "OptimisedTree") -> str:
    return json.dumps(tree_to_json(tree.paths, tree.num_heads, tree.top_k, tree.meta), indent=1)


FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("json", "tree file (JSON)", "tree.json", tree_file),
)


def build_download_buttons() -> list[gr.DownloadButton]:
    return [gr.DownloadButton(f"⬇ {fmt.label}", interactive=False, elem_id=f"download-{fmt.key}", size="sm") for fmt in FORMATS]


def download_buttons(tree: "OptimisedTree") -> list[gr.DownloadButton]:
    """A ready button per format, or a disabled one saying why the engine cannot take this tree."""
    buttons = []
    for fmt in FORMATS:
        try:
            path = write_download(fmt.filename, fmt.render(tree))
        except ValueError as err:
            buttons.append(gr.DownloadButton(f"{fmt.label}: not possible ({err})", value=None, interactive=False))
            continue
        buttons.append(gr.DownloadButton(f"⬇ {fmt.label}", value=path, interactive=True))
    return buttons
