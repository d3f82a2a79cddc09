"""Figures of the Batch tab: every row's tree at one step as small multiples, and measured
throughput against batch size."""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from medusa_core import StepRecord

from . import figures

COLUMNS = 4


def row_trees_figure(steps: Sequence[StepRecord | None], titles: Sequence[str]) -> go.Figure:
    """One small tree per row (None: that row had finished before this step), accepted path ringed."""
    rows = (len(steps) + COLUMNS - 1) // COLUMNS
    columns = min(COLUMNS, len(steps))
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=list(titles), horizontal_spacing=0.03,
                        vertical_spacing=0.12 / max(1, rows - 1) if rows > 1 else 0.0)
    depth = max((max(n.depth for n in s.nodes) for s in steps if s is not None), default=0)
    for i, step in enumerate(steps):
        row, col = i // COLUMNS + 1, i % COLUMNS + 1
        if step is None:
            fig.add_trace(go.Scatter(x=[0], y=[0], mode="text", text=["finished"], hoverinfo="skip", showlegend=False),
                          row=row, col=col)
        else:
            small = figures.tree_figure(figures.step_tree_view(step.nodes, step.accepted))
            for trace in small.data:
                fig.add_trace(trace.update(showlegend=False), row=row, col=col)
        fig.update_xaxes(visible=False, row=row, col=col)
        fig.update_yaxes(visible=False, range=[-depth - 0.6, 0.6], row=row, col=col)
    fig.update_layout(**figures.base_layout("", 60 + rows * (110 + 70 * depth)), showlegend=False, hovermode="closest")
    return fig


def throughput_figure(result: dict) -> go.Figure:
    """Throughput (all new tokens/s) of each method against batch size, and Medusa's speed-up
    over batched plain greedy on a second axis."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    names = list(dict.fromkeys(m["name"] for m in result["methods"]))
    for name in names:
        entries = sorted((m for m in result["methods"] if m["name"] == name), key=lambda m: m["batch_size"])
        sizes = [m["batch_size"] for m in entries]
        fig.add_trace(go.Scatter(x=sizes, y=[m["throughput"] for m in entries], mode="lines+markers",
                                 name=f"{name} tokens/s"), secondary_y=False)
        if entries and entries[0]["kind"] != "hf-greedy":
            fig.add_trace(go.Scatter(x=sizes, y=[m["throughput_speedup"] for m in entries], mode="lines+markers",
                                     line=dict(dash="dot"), name=f"{name} speed-up"), secondary_y=True)
    fig.add_hline(y=1.0, line=dict(color="grey", width=1, dash="dash"), secondary_y=True)
    fig.update_layout(**figures.base_layout(f"Throughput against batch size ({result['device']})", 380),
                      legend=dict(orientation="h", yanchor="top", y=-0.2))
    fig.update_xaxes(title="batch size", type="log", tickvals=sorted({m["batch_size"] for m in result["methods"]}))
    fig.update_yaxes(title="new tokens per second (all rows)", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title="speed-up over plain greedy", secondary_y=True, rangemode="tozero", tickformat=".2f",
                     showgrid=False)
    return fig
