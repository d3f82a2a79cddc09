"""Tree validation, presets, the flat layout and the tree file format."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medusa_core.engine.buffers import build_tree_buffers
from medusa_core.spec.lookup import LookupConfig
from medusa_core.spec.trees import (
    MC_SIM_7B_63,
    TreeError,
    chain_tree,
    full_tree,
    load_tree_file,
    load_tree_with_lookup,
    preset_tree,
    resolve_tree,
    save_tree_file,
    tree_from_json,
    validate_tree,
)
from test_lossless import trees


@pytest.mark.parametrize(
    "paths, kwargs, message",
    [
        ([[0], [0, 0], [1, 0]], {}, r"\[1, 0\] has no parent \[1\]"),
        ([[0], [0]], {}, r"\[0\] appears twice"),
        ([[0], [0, 0], [0, 0, 0]], {"num_heads": 2}, r"\[0, 0, 0\] has depth 3 > 2 heads"),
        ([[0], [7]], {"top_k": 5}, r"\[7\] has rank 7 >= top_k 5"),
        ([[0], []], {}, "empty path"),
        ([[0], [-1]], {}, r"\[-1\] has a negative rank"),
        ([[0], [0.5]], {}, "not an integer"),
        ([[0], "01"], {}, "not a list of ranks"),
    ],
)
def test_invalid_trees_name_the_bad_path(paths, kwargs, message):
    with pytest.raises(TreeError, match=message):
        validate_tree(paths, **kwargs)


def test_presets():
    assert len(preset_tree("mc_sim_7b_63")) == 63
    assert set(preset_tree("mc_sim_7b_63")) == set(MC_SIM_7B_63)
    assert chain_tree(3) == ((0,), (0, 0), (0, 0, 0))
    assert len(full_tree(2, 3)) == 2 + 4 + 8
    assert len(preset_tree("full-3x2")) == 12
    assert preset_tree("chain-2") == chain_tree(2)
    for bad in ("nope", "chain-x", "full-3"):
        with pytest.raises(TreeError):
            preset_tree(bad)


@settings(max_examples=60, deadline=None)
@given(tree=trees(num_heads=5, top_k=10, max_nodes=40))
def test_flat_layout_properties(tree):
    b = build_tree_buffers(tree)
    n = len(tree) + 1
    assert b.num_nodes == n
    assert b.depth[0] == 0 and b.parent[0] == -1
    for i, path in enumerate(b.paths, start=1):
        assert b.depth[i] == len(path)
        assert b.depths[i] == len(path) and b.ranks[i] == path[-1]
        parent = int(b.parent[i])
        assert parent < i  # parents come first, so committing KV in order is safe
        assert (b.paths[parent - 1] if parent else ()) == path[:-1]
    # mask[i, j] iff j is i or an ancestor of i
    for i in range(n):
        ancestors, j = set(), i
        while j >= 0:
            ancestors.add(j)
            j = int(b.parent[j])
        assert set(torch.nonzero(b.ancestor_mask[i]).flatten().tolist()) == ancestors
    # every node lies on some retrieval row; rows run root -> leaf along parents
    covered = set()
    for row in b.retrieve.tolist():
        nodes = [x for x in row if x >= 0]
        assert nodes[0] == 0
        assert all(int(b.parent[c]) == p for p, c in zip(nodes, nodes[1:]))
        covered.update(nodes)
    assert covered == set(range(n))
    # internal nodes are exactly those with children; each node knows its own and its parent's row
    parents = set(b.parent[1:].tolist())
    assert b.internal.tolist() == sorted(parents | {0})
    for i in range(n):
        assert b.internal_row[i] == (b.internal.tolist().index(i) if i in parents | {0} else -1)
        if i:
            assert int(b.internal[b.parent_row[i]]) == int(b.parent[i])


@settings(max_examples=30, deadline=None)
@given(tree=trees(num_heads=4, top_k=6))
def test_tree_file_round_trip(tree, tmp_path_factory):
    path = tmp_path_factory.mktemp("t") / "tree.json"
    save_tree_file(path, tree, num_heads=4, top_k=6, meta={"source": "test"})
    assert load_tree_file(path) == tree
    assert resolve_tree(str(path)) == tree
    assert json.loads(path.read_text())["format"] == "medusa-tree/1"


def test_bad_tree_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TreeError, match="not valid JSON"):
        load_tree_file(bad)
    with pytest.raises(TreeError, match="format"):
        tree_from_json({"format": "other", "paths": []})
    with pytest.raises(TreeError, match="no parent"):
        tree_from_json({"format": "medusa-tree/1", "paths": [[1, 1]], "num_heads": 4, "top_k": 10})
    assert resolve_tree("[[0], [0, 0]]") == ((0,), (0, 0))


def test_tree_file_records_a_context_lookup(tmp_path):
    save_tree_file(tmp_path / "t.json", [[0], [0, 0]], 4, 1, lookup=LookupConfig(6, 2))
    assert load_tree_file(tmp_path / "t.json") == ((0,), (0, 0))
    assert load_tree_with_lookup(tmp_path / "t.json") == (((0,), (0, 0)), LookupConfig(6, 2))
    save_tree_file(tmp_path / "plain.json", [[0]], 4, 1)
    assert load_tree_with_lookup(tmp_path / "plain.json")[1] is None
    assert "lookup" not in json.loads((tmp_path / "plain.json").read_text())
    for bad in ({"tokens": 0}, {"tokens": "6"}, [6], {"max_ngram": 2}, {"tokens": 6, "min_ngram": 4}, {"tokens": 6, "extra": 1}):
        data = json.loads((tmp_path / "t.json").read_text()) | {"lookup": bad}
        (tmp_path / "bad.json").write_text(json.dumps(data))
        with pytest.raises(TreeError, match="lookup"):
            load_tree_with_lookup(tmp_path / "bad.json")


@settings(max_examples=30, deadline=None)
@given(tree=trees(num_heads=4, top_k=5, max_nodes=12), lookup=st.integers(0, 4))
def test_all_logits_layout_computes_every_node(tree, lookup):
    some, every = build_tree_buffers(tree, lookup), build_tree_buffers(tree, lookup, all_logits=True)
    n = every.num_nodes
    assert every.internal.tolist() == list(range(n)) and every.internal_row == tuple(range(n))
    assert every.parent_row.tolist() == [0] + every.parent[1:].tolist()
    assert set(some.internal.tolist()) <= set(range(n)) and some.parent.tolist() == every.parent.tolist()
