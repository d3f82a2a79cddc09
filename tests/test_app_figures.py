"""Figures, text and export buttons of the explorer, from plain data (no model, no server)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gradio")

from app import figures
from app.explore import tree_format
from app.exports import EXPORTS
from app.acceptance import acceptance
from app.text import END_MARK, comparison_html, step_caption, step_spans
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


def lookup_step(accepted_sources: list[str]) -> StepRecord:
    """A depth-1 heads' tree ([0], [1]) plus a 3-token lookup chain; the accepted path's sources given."""
    sources = ["root", "heads", "heads", "lookup", "lookup", "lookup"]
    parents = [-1, 0, 0, 0, 3, 4]
    depths = [0, 1, 1, 1, 2, 3]
    if accepted_sources and accepted_sources[0] == "heads+lookup":
        sources[1] = "heads+lookup"
    nodes = [Node(100 + i, f"t{i}", d, 0, 0.5, p, src) for i, (d, p, src) in enumerate(zip(depths, parents, sources))]
    path = {(): [0], ("heads",): [0, 1], ("heads+lookup",): [0, 1], ("lookup", "lookup", "lookup"): [0, 3, 4, 5]}
    accepted = path[tuple(accepted_sources)]
    return StepRecord(nodes, accepted, [nodes[i].token_id for i in accepted], 0.01)


def test_copied_tokens_are_the_lookups_and_heads_outside_the_tree_are_not_in_it():
    steps = [lookup_step(["lookup"] * 3), lookup_step(["heads"]), lookup_step([]), lookup_step(["heads+lookup"])]
    credit = acceptance(steps, tree_depth=1, num_heads=4, lookup_on=True)
    assert credit.heads == (0.5, None, None, None)  # head 1's own guess on 2 of 4 steps; heads 2-4 have no node
    assert credit.lookup == 0.5  # the copied chain and the token both drafters proposed
    fig = figures.stats_figure([len(s.accepted) - 1 for s in steps], credit)
    bars = fig.data[1]
    assert list(bars.x) == ["head 1", "head 2", "head 3", "head 4", "context lookup"]
    assert list(bars.text) == ["50%", "not in tree", "not in tree", "not in tree", "50%"]
    assert list(fig.data[0].y) == [1, 2, 0, 1, 0]  # steps emitting 1..5 tokens: 1, 2, 4 and 2
    assert acceptance(steps, 1, 4, lookup_on=False).lookup is None


def test_copied_tokens_in_the_text_are_underlined_as_the_lookup():
    spans = step_spans(0, lookup_step(["lookup"] * 3))
    assert "the context lookup" in spans[1] and "head 1" not in spans[1] and "src-lookup" in spans[1]
    assert "head 1" in step_spans(0, lookup_step(["heads"]))[1]


def test_end_of_text_tokens_show_as_an_end_mark():
    step = lookup_step(["heads"])
    spans = step_spans(0, step, special=frozenset({step.emitted[-1]}))
    assert spans[-1].endswith(f">{END_MARK}</span>") and "t1" not in spans[-1]


def test_one_candidate_token_is_singular_in_the_caption():
    assert "1 candidate token verified" in step_caption(0, step_of([], accepted=[0]), 1)
    assert "3 candidate tokens verified" in step_caption(0, step_of([(0,), (1,)], accepted=[0]), 1)


def test_lookup_nodes_keep_their_red_group_when_coloured_by_probability():
    step = lookup_step(["lookup"] * 3)
    fig = figures.tree_figure(figures.step_tree_view(step.nodes, step.accepted), "probability")
    groups = {t.name: t for t in fig.data if t.mode == "markers+text"}
    assert set(groups) == {"nodes", "context lookup"}
    assert len(groups["nodes"].marker.color) == 3  # the root and the heads' two nodes, on the p scale
    assert groups["context lookup"].marker.color == figures.LOOKUP_COLOUR


def test_tree_labels_are_not_clipped_covered_or_under_the_legend():
    step = lookup_step(["lookup"] * 3)
    fig = figures.tree_figure(figures.step_tree_view(step.nodes, step.accepted), "depth", "Step 1")
    names = [t.name for t in fig.data]
    ring = names.index("accepted path")
    assert all(ring < i for i, t in enumerate(fig.data) if t.mode == "markers+text")  # labels drawn over the ring
    assert fig.data[ring].marker.size <= 16 + figures.RING_EXTRA
    assert all(t.cliponaxis is False for t in fig.data if t.mode == "markers+text")
    assert fig.layout.legend.y < 0 and fig.layout.legend.yanchor == "top"  # under the plot, not on the title


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
