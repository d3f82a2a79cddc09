"""Download buttons for the optimised tree: one per export format of the optimizer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import gradio as gr

from optimizer import export_tree

from .inputs import write_download

if TYPE_CHECKING:
    from .optimise import OptimisedTree


@dataclass(frozen=True)
class ExportFormat:
    key: str  # optimizer format name
    label: str
    filename: str


EXPORTS: tuple[ExportFormat, ...] = (
    ExportFormat("json", "tree file (JSON)", "tree.json"),
    ExportFormat("medusa", "Medusa medusa_choices", "medusa_choices.txt"),
    ExportFormat("trtllm", "TensorRT-LLM --medusa_choices", "trtllm_medusa_choices.txt"),
    ExportFormat("vllm", "vLLM speculative_token_tree", "vllm_speculative_token_tree.txt"),
    ExportFormat("sglang", "SGLang EAGLE flags (approximation)", "sglang_args.txt"),
)


def build_download_buttons() -> list[gr.DownloadButton]:
    return [gr.DownloadButton(f"⬇ {fmt.label}", interactive=False, elem_id=f"download-{fmt.key}", size="sm") for fmt in EXPORTS]


def download_buttons(tree: OptimisedTree) -> tuple[list[gr.DownloadButton], str]:
    """A ready button per format, or a disabled one; the note says why an engine cannot take the tree."""
    buttons, notes = [], []
    for fmt in EXPORTS:
        try:
            text = export_tree(tree.paths, fmt.key, tree.num_heads, tree.top_k, tree.meta)
        except ValueError as err:
            buttons.append(gr.DownloadButton(f"✗ {fmt.label}", value=None, interactive=False))
            notes.append(f"**{fmt.label}**: not possible: {err}")
            continue
        buttons.append(gr.DownloadButton(f"⬇ {fmt.label}", value=write_download(fmt.filename, text), interactive=True))
    return buttons, "<br>".join(notes)
