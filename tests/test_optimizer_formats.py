"""Exporters and importers: round trips, engine constraints, the SGLang approximation."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medusa_core.spec.trees import MC_SIM_7B_63, TreeError, chain_tree, validate_tree
from optimizer import FORMATS, IMPORT_FORMATS, EngineError, export_tree, import_tree, product_tree, to_sglang_params
from test_optimizer_strategies import trees

product_trees = st.lists(st.integers(1, 3), min_size=0, max_size=4).map(product_tree)


@settings(max_examples=80, deadline=None)
@given(trees(max_nodes=40, top_k=10, max_depth=5))
def test_round_trip_json_medusa_trtllm(tree: tuple) -> None:
    for fmt in ("json", "medusa", "trtllm"):
        assert import_tree(export_tree(tree, fmt), fmt) == tree


@settings(max_examples=60, deadline=None)
@given(product_trees)
def test_round_trip_vllm_product_trees(tree: tuple) -> None:
    text = export_tree(tree, "vllm")
    assert text.startswith("[") and ("(0,)" in text or tree == ())
    assert import_tree(text, "vllm") == tree


def test_exact_strings_and_meta() -> None:
    tree = [[0], [1], [0, 0]]
    assert export_tree(tree, "medusa") == "[[0], [1], [0, 0]]"
    assert export_tree(tree, "trtllm") == '--medusa_choices="[[0], [1], [0, 0]]"'
    data = json.loads(export_tree(tree, "json", num_heads=4, top_k=10, meta={"objective": "length"}))
    assert data == {"format": "medusa-tree/1", "paths": [[0], [1], [0, 0]], "num_heads": 4, "top_k": 10,
                    "meta": {"objective": "length"}}
    assert export_tree([[0], [1], [0, 0], [0, 1], [1, 0], [1, 1]], "vllm") == "[(0,), (1,), (0, 0), (0, 1), (1, 0), (1, 1)]"
    assert set(IMPORT_FORMATS) < set(FORMATS)


def test_medusa_importer_takes_a_choices_file_line_and_tuples() -> None:
    line = f"mc_sim_7b_63 = {[list(p) for p in MC_SIM_7B_63]}"
    assert import_tree(line, "medusa") == validate_tree(MC_SIM_7B_63)
    assert import_tree("((0,), (0, 0))", "medusa") == ((0,), (0, 0))
    assert import_tree("[[0], [0, 0]]", "trtllm") == ((0,), (0, 0))
    assert import_tree("'[(0,), (0, 0)]'", "vllm") == ((0,), (0, 0))


@pytest.mark.parametrize(
    "text, fmt, message",
    [
        ("[[0], [0, 0", "medusa", "not a Python literal"),
        ("[[0]]; x = 1", "medusa", "must be one list"),
        ("[[0], [foo]]", "medusa", "not a literal list"),
        ("[[0, 0]]", "medusa", "no parent"),
        ("[[0], [0]]", "trtllm", "appears twice"),
        ('{"format": "x"}', "json", "format is 'x'"),
        ("{", "json", "not valid JSON"),
    ],
)
def test_bad_input_raises_tree_errors(text: str, fmt: str, message: str) -> None:
    with pytest.raises(TreeError, match=message):
        import_tree(text, fmt)


def test_engine_constraints_raise_clear_errors() -> None:
    with pytest.raises(EngineError, match="vLLM needs every node of level 1 to have the same children"):
        export_tree(MC_SIM_7B_63, "vllm")
    with pytest.raises(EngineError, match="ranks 0..c-1"):
        export_tree([[0], [2]], "vllm")  # level-uniform counts, but vLLM drafts ranks 0..c-1
    with pytest.raises(EngineError, match="at most 63 nodes"):
        export_tree(chain_tree(4) + tuple((r,) for r in range(1, 61)), "trtllm")
    with pytest.raises(TreeError, match="depth 4 > 3 heads"):
        export_tree(chain_tree(4), "trtllm", num_heads=3)
    with pytest.raises(ValueError, match="unknown tree format"):
        export_tree(chain_tree(2), "onnx")
    with pytest.raises(ValueError, match="cannot import format 'sglang'"):
        import_tree("--speculative-num-steps 3", "sglang")


def test_sglang_triple_is_depth_width_and_size() -> None:
    params = to_sglang_params(MC_SIM_7B_63)
    assert (params.num_steps, params.eagle_topk, params.num_draft_tokens) == (4, 10, 64)
    chain = to_sglang_params(chain_tree(3))  # SGLang's chain rule: draft tokens = steps + 1
    assert (chain.num_steps, chain.eagle_topk, chain.num_draft_tokens) == (3, 1, 4)
    assert export_tree(chain_tree(3), "sglang") == (
        "--speculative-num-steps 3 --speculative-eagle-topk 1 --speculative-num-draft-tokens 4"
    )
