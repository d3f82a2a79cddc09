"""Compare: the run against a second run of the same prompt with another tree (plain decoding by default).

Both runs use the same settings but the tree (and the context lookup, which plain decoding turns
off); the second runs after the first, alone, so each one's speed is its own. The result lives in
the session's gr.State; the page draws the accepted depth per step of both and a table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from medusa_core import DecodeConfig, GenerationRecord, MedusaModel, first_divergence

from . import figures
from .runs import STOPPED, decode_steps
from .text import comparison_html, stat_cards

Path_ = tuple[int, ...]


@dataclass(frozen=True)
class Comparison:
    """Two runs of one prompt, for the comparison view (one session's, in a gr.State)."""

    first_label: str
    first: GenerationRecord
    second_label: str
    second: GenerationRecord


def second_label(first: str, second: str) -> str:
    """The second run's name in the table and legend (a tree compared with itself is its second run)."""
    return f"{second} (second run)" if second == first else second


def running_note(label: str, stopped: bool) -> str:
    if stopped:
        return stat_cards([], f"Stopped before the comparison with {label} ran.")
    return stat_cards([], f"{label.capitalize()} of the same prompt is running for the comparison…")


def run_second(
    medusa: MedusaModel, record: GenerationRecord, tree: tuple[Path_, ...], config: DecodeConfig,
    labels: tuple[str, str], should_stop: Callable[[], bool],
) -> tuple[str, Comparison | None]:
    """The second run of the record's prompt with `tree` and `config`, stoppable like the first:
    the comparison's HTML, and the Comparison (None when it was stopped)."""
    *_, second = decode_steps(medusa, record.prompt, tree, config, should_stop)
    if second.stop_reason == STOPPED:
        return stat_cards([], f"The comparison run ({labels[1]}) was stopped: no comparison."), None
    greedy = config.mode == "greedy"
    divergence = None
    if greedy and record.tokens != second.tokens:
        divergence = first_divergence(medusa.base, record.prompt_tokens, record.tokens, second.tokens)
    text = comparison_html(record, second, greedy, divergence, labels[0], labels[1])
    return text, Comparison(labels[0], record, labels[1], second)


def comparison_view(comparison: Comparison | None) -> Any:
    """The figure of the session's last comparison: accepted depth per step of both runs (hidden
    when the last run had none)."""
    if comparison is None:
        return gr.Plot(value=None, visible=False)
    runs = [(comparison.first_label, [s.accepted_length for s in comparison.first.steps]),
            (comparison.second_label, [s.accepted_length for s in comparison.second.steps])]
    return gr.Plot(value=figures.compare_figure(runs), visible=True)
