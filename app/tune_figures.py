"""Figures of the measured tuning (Optimise tab): each trial's measured speed, the best so far, and
measured speed against tree nodes with its Pareto front. Plain data in, plotly figures out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go

from optimizer import Setup

from .figures import ACCEPT_COLOUR, TOP_LEGEND, add_best_tree_marker, base_layout, empty_figure, pareto_front

COMPLETE_COLOUR = "#1f77b4"
PRUNED_COLOUR = "#9a9a9a"
HEIGHT = 320


@dataclass(frozen=True)
class TrialPoint:
    """One finished trial of a tuning study: its setup and what the decoder measured (a pruned
    trial's figures cover the prompts it got to)."""

    number: int
    pruned: bool
    setup: Setup
    tokens_per_second: float
    tokens_per_step: float

    @property
    def nodes(self) -> int:
        return len(self.setup.tree)


def lookup_text(setup: Setup) -> str:
    lookup = setup.lookup
    return "off" if lookup is None else f"{lookup.tokens} tokens, {lookup.min_ngram}-{lookup.max_ngram}-grams"


def hover(point: TrialPoint) -> str:
    state = "pruned (speed so far)" if point.pruned else "complete"
    return (f"trial {point.number} ({state})<br>{point.nodes} nodes, lookup {lookup_text(point.setup)}<br>"
            f"{point.tokens_per_second:.2f} tokens/s, {point.tokens_per_step:.2f} tokens/step")


def best_so_far(points: Sequence[TrialPoint]) -> tuple[list[int], list[float]]:
    """Trial numbers and the fastest complete trial up to each (pruned trials never lead)."""
    xs: list[int] = []
    ys: list[float] = []
    best = None
    for point in sorted(points, key=lambda p: p.number):
        if not point.pruned:
            best = point.tokens_per_second if best is None else max(best, point.tokens_per_second)
        if best is not None:
            xs.append(point.number)
            ys.append(best)
    return xs, ys


def trial_trace(points: Sequence[TrialPoint], pruned: bool) -> go.Scatter:
    chosen = [p for p in points if p.pruned == pruned]
    marker = (dict(size=9, symbol="x", color=PRUNED_COLOUR) if pruned
              else dict(size=8, color=COMPLETE_COLOUR, line=dict(width=1, color="white")))
    return go.Scatter(x=[p.number for p in chosen], y=[p.tokens_per_second for p in chosen], mode="markers",
                      name="pruned trial" if pruned else "complete trial", marker=marker,
                      hovertext=[hover(p) for p in chosen], hoverinfo="text")


def history_figure(points: Sequence[TrialPoint]) -> go.Figure:
    """Each trial's measured tokens per second by trial number, pruned ones marked apart, and the best so far."""
    if not points:
        return empty_figure("Each trial's measured speed appears here", HEIGHT)
    fig = go.Figure([trial_trace(points, pruned=False), trial_trace(points, pruned=True)])
    xs, ys = best_so_far(points)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="best so far", line=dict(color=ACCEPT_COLOUR, width=3,
                                                                                    shape="hv")))
    fig.update_layout(**base_layout("Measured tuning: tokens per second per trial", HEIGHT), legend=TOP_LEGEND)
    fig.update_xaxes(title="trial", tickformat="d", dtick=max(1, math.ceil(len(points) / 10)))
    fig.update_yaxes(title="measured tokens/s", rangemode="tozero")
    return fig


def speed_front(points: Sequence[TrialPoint]) -> list[tuple[int, float]]:
    """(nodes, tokens/s) of the complete trials that no smaller-or-equal tree beat."""
    return pareto_front([(p.nodes, p.tokens_per_second) for p in points if not p.pruned])


def pareto_figure(points: Sequence[TrialPoint], best: TrialPoint | None) -> go.Figure:
    """Measured tokens per second against tree nodes for the complete trials, their front and the best."""
    complete = [p for p in points if not p.pruned]
    if not complete:
        return empty_figure("Measured speed against tree nodes appears here", HEIGHT)
    fig = go.Figure(go.Scatter(x=[p.nodes for p in complete], y=[p.tokens_per_second for p in complete],
                               mode="markers", name="complete trial", marker=dict(size=7, color="#9fb8d6"),
                               hovertext=[hover(p) for p in complete], hoverinfo="text"))
    front = speed_front(points)
    fig.add_trace(go.Scatter(x=[n for n, _ in front], y=[s for _, s in front], mode="lines+markers",
                             name="Pareto front", line=dict(color=COMPLETE_COLOUR, width=2, shape="hv"),
                             marker=dict(size=8)))
    add_best_tree_marker(fig, None if best is None else (best.nodes, best.tokens_per_second), "fastest")
    fig.update_layout(**base_layout("Measured speed against tree nodes", HEIGHT), legend=TOP_LEGEND)
    fig.update_xaxes(title="tree nodes")
    fig.update_yaxes(title="measured tokens/s", rangemode="tozero")
    return fig
