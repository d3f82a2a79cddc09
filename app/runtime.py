"""Where and how the explorer runs: launch settings, queue limits and the ZeroGPU decorator."""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

import gradio as gr

F = TypeVar("F", bound=Callable[..., Any])

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_PROMPT_CHARS = 8000
QUEUE_MAX_SIZE = 64

CSS = """
.medusa-text { white-space: pre-wrap; line-height: 1.9; font-size: 15px; min-height: 3em; }
.medusa-text .tok { border-radius: 3px; padding: 1px 0; }
.medusa-text .src-base { border-bottom: 3px solid #444; }
.medusa-text .src-head { border-bottom: 3px solid var(--head-colour); font-weight: 600; }
.medusa-legend { font-size: 12px; opacity: 0.85; margin-bottom: 6px; }
.medusa-legend span { margin-right: 10px; padding: 0 4px; }
.medusa-stats { display: flex; flex-wrap: wrap; gap: 8px; }
.medusa-stats .card { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 6px 12px; min-width: 84px; }
.medusa-stats .card .v { font-size: 20px; font-weight: 700; }
.medusa-stats .card .k { font-size: 11px; opacity: 0.7; }
.medusa-note { font-size: 12px; opacity: 0.7; margin-top: 4px; }
.medusa-compare { font-size: 12px; margin-top: 6px; border-collapse: collapse; }
.medusa-compare th, .medusa-compare td { padding: 2px 8px; text-align: right; }
.medusa-compare th:first-child, .medusa-compare td:first-child { text-align: left; white-space: nowrap; }
"""


def spaces_module() -> ModuleType | None:
    """Hugging Face's `spaces` package (ZeroGPU), when installed."""
    try:
        import spaces
    except ImportError:
        return None
    return spaces


def gpu_task(fn: F) -> F:
    """Run `fn` on a ZeroGPU slice when the `spaces` package is importable, else call it plainly."""
    spaces = spaces_module()
    return fn if spaces is None else spaces.GPU(fn)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def concurrency_limit() -> int:
    """Decoding runs per device at once: a GPU interleaves a few; two CPU cores take two."""
    configured = os.environ.get("MEDUSA_CONCURRENCY")
    if configured:
        return max(1, int(configured))
    return 4 if cuda_available() else 2


def server_name() -> str:
    """127.0.0.1 unless configured (Hugging Face Spaces sets GRADIO_SERVER_NAME=0.0.0.0)."""
    return os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")


def launch_kwargs() -> dict[str, Any]:
    """Arguments for `Blocks.launch`: no share tunnel, bounded uploads, our theme and CSS."""
    port = os.environ.get("GRADIO_SERVER_PORT")
    return {
        "server_name": server_name(),
        "server_port": int(port) if port else None,
        "share": False,
        "max_file_size": MAX_UPLOAD_BYTES,
        "theme": gr.themes.Soft(primary_hue="orange", secondary_hue="blue"),
        "css": CSS,
        "footer_links": ["api", "gradio"],
    }
