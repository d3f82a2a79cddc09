"""Plotly figures of the explorer: candidate trees, the tree attention mask, statistics, accuracy
tables and the optimiser's history, Pareto front and E(N) curve. Plain data in, figures out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from medusa_core import Node

from .acceptance import Acceptance

ColourBy = Literal["depth", "probability"]

BASE_COLOUR = "#4a4a4a"
HEAD_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#bcbd22", "#7f7f7f")
ACCEPT_COLOUR = "#ff7f0e"
LOOKUP_COLOUR = "#d62728"
LOOKUP_NAME = "context lookup"
FADED_OPACITY = 0.3
FONT = dict(family="Inter, Segoe UI, sans-serif", size=12)
MAX_LABEL_CHARS = 10
MAX_LABELLED_NODES = 24


def depth_colour(depth: int) -> str:
    """The root is the base model's token; depth d >= 1 comes from head d."""
    return BASE_COLOUR if depth == 0 else HEAD_COLOURS[(depth - 1) % len(HEAD_COLOURS)]


def depth_name(depth: int) -> str:
    return "root (base model)" if depth == 0 else f"head {depth}"


def token_label(text: str) -> str:
    """A short, visible label for a token: whitespace made visible, long tokens cut."""
    shown = text.replace("\n", "⏎").replace("\t", "⇥").strip() or repr(text)
    return shown if len(shown) <= MAX_LABEL_CHARS else shown[: MAX_LABEL_CHARS - 1] + "…"


TOP_LEGEND = dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom")
# Under the plot: a legend at the top right sits on the title and on plotly's toolbar.
BOTTOM_LEGEND = dict(orientation="h", yanchor="top", y=-0.02, xanchor="left", x=0.0)
RING_EXTRA = 6  # the accepted ring's diameter over the node's: tight, so it stays clear of the label


def base_layout(title: str, height: int) -> dict:
    return dict(
        title=dict(text=title, x=0.01, xanchor="left", font=dict(size=14)),
        height=height,
        margin=dict(l=40, r=20, t=50, b=40),
        font=FONT,
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
    )


def empty_figure(message: str, height: int = 320) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(**base_layout("", height))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.add_annotation(text=message, showarrow=False, font=dict(size=14, color="#888"), x=0.5, y=0.5, xref="paper", yref="paper")
    return fig


# ---------------------------------------------------------------- candidate trees


@dataclass(frozen=True)
class TreeView:
    """What a tree drawing needs, whatever it comes from (a decoding step or a tree shape)."""

    parents: list[int]  # node 0 is the root, parent -1
    depths: list[int]
    labels: list[str]
    hovers: list[str]
    values: list[float]  # the colour in "probability" mode
    accepted: list[int]  # node ids root -> last accepted node; empty when nothing was verified
    lookup: frozenset[int] = frozenset()  # nodes copied from the context rather than proposed by heads


def node_origin(node: Node) -> str:
    if node.depth == 0:
        return "base model's own token"
    if node.source == "lookup":
        return f"copied from the context, {node.depth} after the root"
    return f"head {node.depth}, rank {node.rank}<br>probability {node.prob:.3f}"


def step_tree_view(nodes: Sequence[Node], accepted: Sequence[int]) -> TreeView:
    hovers = [
        f"<b>{node.text!r}</b><br>token id {node.token_id}<br>"
        + node_origin(node)
        + (f"<br>probability {node.prob:.3f}" if node.depth == 0 else "")
        + ("<br><b>accepted</b>" if i in accepted else "")
        for i, node in enumerate(nodes)
    ]
    return TreeView(
        parents=[n.parent for n in nodes],
        depths=[n.depth for n in nodes],
        labels=[token_label(n.text) for n in nodes],
        hovers=hovers,
        values=[n.prob for n in nodes],
        accepted=list(accepted),
        lookup=frozenset(i for i, n in enumerate(nodes) if n.source == "lookup"),
    )


def shape_tree_view(paths: Sequence[Sequence[int]], weights: Sequence[float] | None = None) -> TreeView:
    """A tree shape (paths in breadth-first order); weights = each node's chance to be accepted."""
    index = {(): 0} | {tuple(p): i + 1 for i, p in enumerate(paths)}
    values = [1.0] + list(weights if weights is not None else [float("nan")] * len(paths))
    hovers = ["root: the base model's own token"] + [
        f"path {list(p)}<br>head {len(p)}, rank {p[-1]}"
        + (f"<br>P(on accepted path) {w:.3f}" if weights is not None else "")
        for p, w in zip(paths, values[1:])
    ]
    return TreeView(
        parents=[-1] + [index[tuple(p[:-1])] for p in paths],
        depths=[0] + [len(p) for p in paths],
        labels=["root"] + [str(p[-1]) for p in paths],
        hovers=hovers,
        values=values,
        accepted=[],
    )


def children_of(parents: Sequence[int]) -> list[list[int]]:
    children: list[list[int]] = [[] for _ in parents]
    for node, parent in enumerate(parents):
        if parent >= 0:
            children[parent].append(node)
    return children


def tidy_layout(parents: Sequence[int]) -> np.ndarray:
    """x of every node for a top-down drawing: leaves evenly spaced in depth-first order, each
    parent centred over its children (children keep their order, i.e. rank order)."""
    children = children_of(parents)
    x = np.zeros(len(parents))
    next_leaf = 0.0

    def place(node: int) -> None:
        nonlocal next_leaf
        if not children[node]:
            x[node] = next_leaf
            next_leaf += 1.0
            return
        for child in children[node]:
            place(child)
        x[node] = (x[children[node][0]] + x[children[node][-1]]) / 2

    if len(parents):
        place(0)
    return x


def first_child_chain(parents: Sequence[int]) -> list[int]:
    """Root, its best-ranked child, that child's best-ranked child, ...: the heads' top guesses."""
    children = children_of(parents)
    chain = [0] if len(parents) else []
    while chain and children[chain[-1]]:
        chain.append(children[chain[-1]][0])
    return chain


def shown_labels(view: TreeView) -> list[str]:
    """Every label on small trees; on big ones only the accepted path and the heads' top-guess
    chain (every token stays readable on hover)."""
    if len(view.parents) <= MAX_LABELLED_NODES:
        return list(view.labels)
    keep = set(view.accepted) | set(first_child_chain(view.parents))
    return [label if i in keep else "" for i, label in enumerate(view.labels)]


def edge_coordinates(edges: Sequence[tuple[int, int]], x: np.ndarray, y: np.ndarray) -> tuple[list, list]:
    xs: list = []
    ys: list = []
    for parent, child in edges:
        xs += [x[parent], x[child], None]
        ys += [y[parent], y[child], None]
    return xs, ys


def node_traces(view: TreeView, x: np.ndarray, y: np.ndarray, colour_by: ColourBy, size: int) -> list[go.Scatter]:
    accepted = set(view.accepted)
    faded = bool(accepted)
    opacity = [1.0 if (i in accepted or not faded) else FADED_OPACITY for i in range(len(view.parents))]
    labels = shown_labels(view)
    proposed = [(i, d) for i, d in enumerate(view.depths) if i not in view.lookup]
    if colour_by == "probability":  # copied nodes have no probability: red, not p = 0 on the scale
        groups = [("nodes", [i for i, _ in proposed])]
    else:
        groups = [(depth_name(d), [i for i, nd in proposed if nd == d]) for d in sorted({d for _, d in proposed})]
    groups += [(LOOKUP_NAME, sorted(view.lookup))] if view.lookup else []
    traces = []
    for name, members in groups:
        marker: dict = dict(size=size, opacity=[opacity[i] for i in members], line=dict(width=1, color="white"))
        if name == LOOKUP_NAME:
            marker["color"] = LOOKUP_COLOUR
        elif colour_by == "probability":
            marker |= dict(color=[view.values[i] for i in members], colorscale="Viridis", cmin=0, cmax=1,
                           colorbar=dict(title="p", thickness=12, len=0.8))
        else:
            marker["color"] = depth_colour(view.depths[members[0]])
        traces.append(
            go.Scatter(
                x=x[members], y=y[members], mode="markers+text", name=name,
                text=[labels[i] for i in members],
                textposition="bottom center", cliponaxis=False,  # labels at the edges are not cut
                textfont=dict(size=11, color=[f"rgba(30,30,30,{opacity[i]})" for i in members]),
                hovertext=[view.hovers[i] for i in members], hoverinfo="text",
                marker=marker, showlegend=colour_by == "depth" or name == LOOKUP_NAME,
            )
        )
    return traces


def tree_figure(view: TreeView, colour_by: ColourBy = "depth", title: str = "") -> go.Figure:
    """Tidy top-down drawing: accepted path in orange, rejected candidates faded, hover details."""
    x = tidy_layout(view.parents)
    y = -np.asarray(view.depths, dtype=float)
    accepted = set(view.accepted)
    edges = [(p, c) for c, p in enumerate(view.parents) if p >= 0]
    on_path = [(p, c) for p, c in edges if c in accepted]
    off_path = [(p, c) for p, c in edges if c not in accepted]
    size = 16 if len(view.parents) <= 24 else 11
    fig = go.Figure()
    xs, ys = edge_coordinates(off_path, x, y)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="candidates", hoverinfo="skip", showlegend=False,
                             line=dict(color="rgba(150,150,150,0.45)" if accepted else "rgba(120,120,120,0.8)", width=1.5)))
    xs, ys = edge_coordinates(on_path, x, y)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="accepted edges", hoverinfo="skip", legendgroup="accepted",
                             line=dict(color=ACCEPT_COLOUR, width=5), showlegend=False))
    if view.accepted:  # drawn before the nodes, so the labels are written over the ring, not under it
        ids = list(view.accepted)
        fig.add_trace(go.Scatter(x=x[ids], y=y[ids], mode="markers", name="accepted path", hoverinfo="skip", legendgroup="accepted",
                                 marker=dict(size=size + RING_EXTRA, symbol="circle-open", color=ACCEPT_COLOUR,
                                             line=dict(width=2.5, color=ACCEPT_COLOUR))))
    for trace in node_traces(view, x, y, colour_by, size):
        fig.add_trace(trace)
    max_depth = max(view.depths, default=0)
    fig.update_layout(**base_layout(title, 170 + 95 * (max_depth + 1)), hovermode="closest", legend=BOTTOM_LEGEND)
    fig.update_layout(margin=dict(l=40, r=40, t=50, b=70))
    fig.update_xaxes(visible=False, range=[float(x.min()) - 1.0, float(x.max()) + 1.0] if len(x) else None)
    fig.update_yaxes(visible=False, range=[-max_depth - 0.6, 0.6])
    return fig


# ---------------------------------------------------------------- tree attention mask


def path_label(path: Sequence[int]) -> str:
    return "root" if not path else "·".join(str(r) for r in path)


def mask_figure(mask: np.ndarray, paths: Sequence[Sequence[int]], lookup: int = 0) -> go.Figure:
    """mask [N, N] bool: row i (a node's query) sees column j (the prefix is seen by every node);
    the last `lookup` nodes are the context-lookup chain under the root."""
    labels = [path_label(())] + [path_label(p) for p in paths] + [f"copy {i}" for i in range(1, lookup + 1)]
    hover = [[f"{labels[i]} {'sees' if mask[i, j] else 'does not see'} {labels[j]}" for j in range(len(labels))] for i in range(len(labels))]
    fig = go.Figure(go.Heatmap(
        z=mask.astype(int), x=labels, y=labels, hovertext=hover, hoverinfo="text", showscale=False,
        colorscale=[[0, "#f1f1f1"], [1, ACCEPT_COLOUR]], xgap=1, ygap=1,
    ))
    size = min(760, 260 + 9 * len(labels))
    fig.update_layout(**base_layout(f"Tree attention mask ({len(labels)} tokens; every row also sees the whole prefix)", size))
    fig.update_xaxes(title="key (node attended to)", type="category", tickfont=dict(size=9), side="top")
    fig.update_yaxes(title="query (node)", type="category", autorange="reversed", tickfont=dict(size=9))
    return fig


# ---------------------------------------------------------------- decoding statistics


NOT_IN_TREE_COLOUR = "#d0d0d0"


def credit_bars(credit: Acceptance) -> tuple[list[str], list[float], list[str], list[str], list[str]]:
    """Bars of the credit chart: name, height, label, colour and hover per head (and the lookup)."""
    names, heights, labels, colours, hovers = [], [], [], [], []
    for head, share in enumerate(credit.heads, start=1):
        names.append(f"head {head}")
        heights.append(0.0 if share is None else share)
        labels.append("not in tree" if share is None else f"{share:.0%}")
        colours.append(NOT_IN_TREE_COLOUR if share is None else depth_colour(head))
        hovers.append(f"head {head} has no node in this tree" if share is None
                      else f"head {head}'s own guess accepted in {share:.1%} of steps")
    if credit.lookup is not None:
        names.append(LOOKUP_NAME)
        heights.append(credit.lookup)
        labels.append(f"{credit.lookup:.0%}")
        colours.append(LOOKUP_COLOUR)
        hovers.append(f"a copied token accepted in {credit.lookup:.1%} of steps")
    return names, heights, labels, colours, hovers


def stats_figure(accepted_lengths: Sequence[int], credit: Acceptance) -> go.Figure:
    """Histogram of tokens per step, and who got the accepted tokens: each head's own guesses (a
    token copied by the context lookup is the lookup's, not a head's) and the lookup."""
    num_heads = len(credit.heads)
    tokens = np.asarray(accepted_lengths, dtype=int) + 1
    counts = np.bincount(tokens, minlength=num_heads + 2)[1:]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("tokens per step", "accepted per head (share of steps)"))
    fig.add_trace(go.Bar(x=list(range(1, len(counts) + 1)), y=counts.tolist(), marker_color=ACCEPT_COLOUR, name="steps",
                         hovertemplate="%{y} steps emitted %{x} tokens<extra></extra>"), row=1, col=1)
    names, heights, labels, colours, hovers = credit_bars(credit)
    fig.add_trace(go.Bar(x=names, y=heights, marker_color=colours, name="acceptance", text=labels, textposition="outside",
                         hovertext=hovers, hoverinfo="text", cliponaxis=False), row=1, col=2)
    fig.update_layout(**base_layout("", 300), showlegend=False, bargap=0.25)
    fig.update_layout(margin=dict(l=40, r=20, t=40, b=40))
    fig.update_xaxes(dtick=1, row=1, col=1)
    fig.update_yaxes(title="steps", row=1, col=1)
    fig.update_yaxes(range=[0, 1.15], tickformat=".0%", row=1, col=2)
    return fig


COMPARE_COLOURS = (ACCEPT_COLOUR, "#1f77b4")


def compare_figure(runs: Sequence[tuple[str, Sequence[int]]]) -> go.Figure:
    """Accepted depth per step of two runs of one prompt (label, accepted lengths): where one tree
    keeps more of its guesses, and how many steps each needed."""
    fig = go.Figure()
    for (label, lengths), colour in zip(runs, COMPARE_COLOURS):
        mean = sum(lengths) / max(1, len(lengths))
        fig.add_trace(go.Scatter(
            x=list(range(1, len(lengths) + 1)), y=list(lengths), mode="lines+markers",
            name=f"{label}: {len(lengths)} steps, {mean:.2f} accepted / step", marker=dict(color=colour, size=6),
            line=dict(color=colour), hovertemplate=f"{label}<br>step %{{x}}: %{{y}} accepted<extra></extra>",
        ))
    # The legend under the plot (the runs' names are long), so no x-axis title there: the title says "step".
    fig.update_layout(**base_layout("Accepted depth at each step (x: step), same prompt", 320),
                      legend=dict(BOTTOM_LEGEND, y=-0.12))
    fig.update_layout(margin=dict(l=40, r=20, t=40, b=90))
    fig.update_yaxes(title="accepted depth", dtick=1, rangemode="tozero")
    return fig


# ---------------------------------------------------------------- accuracy tables


def accuracy_heatmap(acc: Sequence[Sequence[float]], cumulative: bool = False, title: str = "") -> go.Figure:
    """acc [heads][top_k] per-rank accuracies; cumulative shows top-k accuracy instead."""
    values = np.asarray(acc, dtype=float)
    if cumulative:
        values = np.cumsum(values, axis=1)
    heads = [f"head {h + 1}" for h in range(values.shape[0])]
    ranks = [f"top-{k + 1}" if cumulative else f"rank {k}" for k in range(values.shape[1])]
    fig = go.Figure(go.Heatmap(
        z=values, x=ranks, y=heads, colorscale="YlOrRd", zmin=0, zmax=max(float(values.max()), 1e-9),
        text=np.round(values, 3), texttemplate="%{text:.2f}", colorbar=dict(title="accuracy", thickness=12),
        hovertemplate="%{y}, %{x}: %{z:.3f}<extra></extra>", xgap=2, ygap=2,
    ))
    fig.update_layout(**base_layout(title, 140 + 48 * len(heads)))
    fig.update_yaxes(autorange="reversed")
    return fig


# ---------------------------------------------------------------- optimiser


def history_figure(values: Sequence[float], objective: str) -> go.Figure:
    """Each trial's objective value and the best so far."""
    trials = np.arange(1, len(values) + 1)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=trials, y=values, mode="markers", name="trial", marker=dict(size=5, color="#1f77b4", opacity=0.6)))
    fig.add_trace(go.Scatter(x=trials, y=np.maximum.accumulate(values) if len(values) else [], mode="lines", name="best so far",
                             line=dict(color=ACCEPT_COLOUR, width=3)))
    fig.update_layout(**base_layout("Optimisation history", 320), legend=TOP_LEGEND)
    fig.update_xaxes(title="trial")
    fig.update_yaxes(title=objective)
    return fig


def pareto_front(points: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    """Points not beaten by another with no more nodes and a larger expected length."""
    front: list[tuple[int, float]] = []
    for nodes, length in sorted(set(points), key=lambda p: (p[0], -p[1])):
        if not front or length > front[-1][1]:
            front.append((nodes, length))
    return front


def add_best_tree_marker(fig: go.Figure, best: tuple[float, float] | None, name: str = "best tree") -> None:
    """Star the chosen tree at (nodes or cost, expected length) on an optimiser figure."""
    if best is not None:
        fig.add_trace(go.Scatter(x=[best[0]], y=[best[1]], mode="markers", name=name,
                                 marker=dict(size=16, symbol="star", color=ACCEPT_COLOUR, line=dict(width=1, color="black"))))

def pareto_figure(points: Sequence[tuple[float, float]], best: tuple[float, float] | None, x_title: str = "tree nodes") -> go.Figure:
    """Every trial tree (cost, expected length), its Pareto front and the chosen tree; the cost is the
    node count or the predicted ms per step, as the objective has it."""
    fig = go.Figure()
    if points:
        xs, lengths = zip(*points)
        fig.add_trace(go.Scatter(x=xs, y=lengths, mode="markers", name="trial trees", marker=dict(size=6, color="#9fb8d6")))
        front = pareto_front(points)
        fig.add_trace(go.Scatter(x=[p[0] for p in front], y=[p[1] for p in front], mode="lines+markers", name="Pareto front",
                                 line=dict(color="#1f77b4", width=2, shape="hv"), marker=dict(size=7)))
    add_best_tree_marker(fig, best, "chosen tree")
    fig.update_layout(**base_layout(f"Pareto front: expected length vs {x_title}", 320), legend=TOP_LEGEND)
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title="expected tokens per step")
    return fig


def no_tradeoff_figure(nodes: int) -> go.Figure:
    """The Pareto plot of a search whose trials all fill the budget: one column of points says nothing."""
    return empty_figure(f"Every trial tree uses the whole budget of {nodes} nodes: no trade-off to plot.<br>"
                        "E(N) below shows expected length against the number of nodes.", 320)


def curve_figure(curve: Sequence[float], presets: Sequence[tuple[str, int, float]], best: tuple[int, float] | None) -> go.Figure:
    """E(N) of the exact optimum for N = 0..budget, with the presets and the chosen tree marked."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=list(range(len(curve))), y=list(curve), mode="lines", name="exact optimum E(N)", line=dict(color="#1f77b4", width=3)))
    if presets:
        names, nodes, lengths = zip(*presets)
        fig.add_trace(go.Scatter(x=nodes, y=lengths, mode="markers+text", text=names, textposition="bottom center", name="presets",
                                 marker=dict(size=9, color="#7f7f7f", symbol="diamond"), textfont=dict(size=10), cliponaxis=False))
    add_best_tree_marker(fig, best)
    fig.update_layout(**base_layout("Best expected length E(N) for a budget of N nodes", 320), legend=TOP_LEGEND)
    fig.update_xaxes(title="node budget N")
    fig.update_yaxes(title="expected tokens per step")
    return fig


def latency_figure(sizes: Sequence[int], seconds: Sequence[float], device: str) -> go.Figure:
    fig = go.Figure(go.Scatter(x=list(sizes), y=[s * 1000 for s in seconds], mode="lines+markers", line=dict(color="#1f77b4")))
    fig.update_layout(**base_layout(f"Forward-pass latency on {device}", 280))
    fig.update_xaxes(title="tokens verified in one pass (tree nodes + root)")
    fig.update_yaxes(title="ms", rangemode="tozero")
    return fig
