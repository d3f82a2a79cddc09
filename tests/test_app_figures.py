"""Figures, text and export buttons of the explorer, from plain data (no model, no server)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gradio")

from app import figures
from app.explore import tree_format
from app.exports import EXPORTS
from app.text import comparison_html, step_spans
from medusa_core import GenerationRecord, Node, StepRecord, build_tree_buffers, preset_tree
from optimizer import FORMATS, export_tree


def step_of(paths: list[tuple[int, ...]], accepted: list[int]) -> StepRecord:
    buffers = build_tree_buffers(paths)
    nodes = [
        Node(100 + i, f"t{i}", int(d), int(r), 0.5, int(p))
        for i, (d, r, p) in enumerate(zip(buffers.depth.tolist(), buffers.ranks, buffers.parent.tolist()))
    ]
    return StepRecord(nodes, accepted, [nodes[i].token_id for i in accepted], 0.01)


def test_tidy_layout_centres_parents_and_separates_leaves():
    paths = preset_tree("mc_sim_7b_63")
    parents = build_tree_buffers(paths).parent.tolist()
    x = figures.tidy_layout(parents)
    children = figures.children_of(parents)
    for node, kids in enumerate(children):
        if kids:
            assert x[node] == pytest.approx((x[kids[0]] + x[kids[-1]]) / 2)
            assert list(x[kids]) == sorted(x[kids])  # rank order left to right
    depths = build_tree_buffers(paths).depth.numpy()
    for depth in set(depths.tolist()):
        level = np.sort(x[depths == depth])
        assert np.all(np.diff(level) > 0), "two nodes of one level overlap"


def test_tree_figure_highlights_the_accepted_path_and_fades_the_rest():
    step = step_of(list(preset_tree("full-2x2")), accepted=[0, 1, 3])
    fig = figures.tree_figure(figures.step_tree_view(step.nodes, step.accepted))
    names = [t.name for t in fig.data]
    accepted_edges = fig.data[names.index("accepted edges")]
    assert len([v for v in accepted_edges.x if v is not None]) == 4  # two edges
    ring = fig.data[names.index("accepted path")]
    assert len(ring.x) == 3 and ring.showlegend is not False
    opacities = [o for t in fig.data if t.name.startswith(("root", "head")) for o in t.marker.opacity]
    assert sorted(opacities).count(1.0) == 3 and min(opacities) == figures.FADED_OPACITY
    hovers = [h for t in fig.data if t.hovertext for h in t.hovertext]
    assert any("token id 101" in h and "rank 0" in h and "probability 0.500" in h for h in hovers)


def test_tree_figure_colours_by_probability_with_a_colour_bar():
    step = step_of(list(preset_tree("chain-3")), accepted=[0])
    fig = figures.tree_figure(figures.step_tree_view(step.nodes, step.accepted), "probability")
    nodes = [t for t in fig.data if t.name == "nodes"][0]
    assert list(nodes.marker.color) == [0.5] * 4 and nodes.marker.colorbar.title.text == "p"


def test_single_root_tree_draws():
    step = step_of([], accepted=[0])
    fig = figures.tree_figure(figures.step_tree_view(step.nodes, step.accepted))
    assert len([t for t in fig.data if t.name == "root (base model)"][0].x) == 1


def test_mask_figure_is_the_ancestor_mask():
    paths = preset_tree("full-2x2")
    mask = build_tree_buffers(paths).ancestor_mask.numpy()
    fig = figures.mask_figure(mask, paths)
    assert np.array_equal(np.asarray(fig.data[0].z), mask.astype(int))
    assert list(fig.data[0].x) == ["root", "0", "1", "0·0", "0·1", "1·0", "1·1"]


def test_per_head_acceptance_and_stats_figure():
    assert figures.per_head_acceptance([0, 1, 2, 2], 3) == [0.75, 0.5, 0.0]
    fig = figures.stats_figure([0, 1, 2, 2], 3)
    assert list(fig.data[0].y) == [1, 1, 2, 0]


def test_pareto_front_keeps_only_undominated_points():
    points = [(1, 1.5), (2, 1.4), (2, 1.8), (3, 1.8), (4, 2.1)]
    assert figures.pareto_front(points) == [(1, 1.5), (2, 1.8), (4, 2.1)]


def test_accuracy_heatmap_cumulative():
    fig = figures.accuracy_heatmap([[0.5, 0.2], [0.3, 0.1]], cumulative=True)
    assert np.allclose(fig.data[0].z, [[0.5, 0.7], [0.3, 0.4]])


def test_step_spans_mark_step_and_source():
    step = step_of(list(preset_tree("chain-3")), accepted=[0, 1, 2])
    spans = step_spans(4, step)
    assert len(spans) == 3
    assert 'data-step="5"' in spans[0] and "src-base" in spans[0] and "the base model" in spans[0]
    assert "src-head" in spans[2] and "head 2" in spans[2]


def record(tokens: list[int], seconds: float) -> GenerationRecord:
    return GenerationRecord("m", "h", "cpu", "float32", [], {}, "p", [1], tokens, "", [], seconds, "eos")


def test_comparison_reports_speed_up_and_identity():
    text = comparison_html(record([1, 2, 3, 4], 1.0), record([1, 2, 3, 4], 2.0), greedy=True)
    assert "2.00x" in text and "outputs identical" in text
    assert "outputs differ" in comparison_html(record([1, 2], 1.0), record([1, 3], 1.0), greedy=True)


def test_comparison_says_where_outputs_part_and_whether_it_was_a_near_tie():
    from medusa_core import Divergence

    tie = Divergence(index=6, ours=52, reference=91, margin=0.03, tie_margin=0.26)
    text = comparison_html(record([1, 2], 1.0), record([1, 3], 1.0), greedy=True, divergence=tie)
    assert "generated token 7" in text and "near-tie" in text and "rounds differently" in text
    real = Divergence(index=1, ours=2, reference=3, margin=4.0, tie_margin=1e-6)
    assert "please report" in comparison_html(record([1, 2], 1.0), record([1, 3], 1.0), greedy=True, divergence=real)


def test_big_trees_label_only_the_accepted_path_and_the_top_guesses():
    paths = list(preset_tree("mc_sim_7b_63"))  # breadth-first: node 1 = [0], 3 = [0, 0]
    step = step_of(paths, accepted=[0, 2])  # root and [1]
    labels = figures.shown_labels(figures.step_tree_view(step.nodes, step.accepted))
    chain = figures.first_child_chain(build_tree_buffers(paths).parent.tolist())
    assert [paths[i - 1] for i in chain[1:]] == [(0,), (0, 0), (0, 0, 0), (0, 0, 0, 0)]
    assert {i for i, label in enumerate(labels) if label} == set(chain) | {2}


def test_every_optimizer_export_format_has_a_button():
    assert [fmt.key for fmt in EXPORTS] == list(FORMATS)


@pytest.mark.parametrize("fmt", ["json", "medusa", "trtllm", "vllm"])
def test_uploaded_tree_format_is_recognised(fmt):
    assert tree_format(export_tree(preset_tree("full-2x2"), fmt, 4, 10)) == fmt


def test_lookup_nodes_are_their_own_red_group():
    paths = [(0,), (1,)]
    buffers = build_tree_buffers(paths, lookup=2)
    sources = ["root", "heads", "heads", "lookup", "lookup"]
    nodes = [
        Node(100 + i, f"t{i}", int(d), int(r), 0.5, int(p), src)
        for i, (d, r, p, src) in enumerate(zip(buffers.depth.tolist(), buffers.ranks, buffers.parent.tolist(), sources))
    ]
    view = figures.step_tree_view(nodes, [0, 3, 4])
    assert view.lookup == frozenset({3, 4})
    assert "copied from the context" in view.hovers[3] and "rank" not in view.hovers[3]
    fig = figures.tree_figure(view)
    groups = {t.name: t for t in fig.data if t.mode == "markers+text"}
    assert set(groups) == {"root (base model)", "head 1", "context lookup"}
    assert groups["context lookup"].marker.color == figures.LOOKUP_COLOUR
    assert list(groups["context lookup"].text) == ["t3", "t4"]
    assert len(groups["head 1"].x) == 2
