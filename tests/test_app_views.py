"""Explorer v2 views from plain data (no model, no server): why rejected, the comparison, trace import."""

from __future__ import annotations

import html
import json

import pytest

pytest.importorskip("gradio")

from app import figures  # noqa: E402
from app.inputs import InputError  # noqa: E402
from app.text import comparison_html  # noqa: E402
from app.trace import read_trace, trace_spans  # noqa: E402
from app.why import why_rejected as why_html  # noqa: E402
from medusa_core import GenerationRecord, Node, StepRecord  # noqa: E402

# A 2x2 tree: root 'The'; depth 1 ' cat' (rank 0), ' dog' (rank 1); depth 2 ' sat' (0) under ' cat'.
HEADS = [[11, 12, 13], [21, 22, 23]]  # head 1's and head 2's top-3 lists


def why_rejected(*args) -> str:
    return html.unescape(why_html(*args))  # the page shows the escaped quotes as quotes


def tree_step(accepted: list[int], drawn: list[int] | None = None) -> StepRecord:
    nodes = [Node(10, "The", 0, -1, 0.9, -1, "root"), Node(11, " cat", 1, 0, 0.6, 0), Node(12, " dog", 1, 1, 0.3, 0),
             Node(21, " sat", 2, 0, 0.5, 1)]
    return StepRecord(nodes, accepted, [nodes[i].token_id for i in accepted], 0.01, drawn, HEADS)


def root_step(token: int, text: str, prob: float) -> StepRecord:
    return StepRecord([Node(token, text, 0, -1, prob, -1, "root")], [0], [token], 0.01, None, HEADS)


def test_the_models_choice_its_probability_and_its_rank_in_the_heads_list():
    text = why_rejected([tree_step([0]), root_step(13, " cow", 0.42)], 0)
    assert "' cat' (rank 0, head's p=0.60), ' dog' (rank 1, head's p=0.30)" in text  # the rejected guesses
    assert "the model chose **' cow'** (model probability 0.42)" in text
    assert "rank 2 in head 1's list" in text and "drafts only ranks 0, 1" in text


def test_a_choice_outside_the_heads_top_k_says_so():
    text = why_rejected([tree_step([0, 1]), root_step(99, " ran", 0.8)], 0)
    assert "after ' cat' the model chose **' ran'** (model probability 0.80)" in text
    assert "not in head 2's top 3" in text


def test_a_path_to_the_trees_full_depth_had_no_wrong_node():
    text = why_rejected([tree_step([0, 1, 3]), root_step(5, "!", 0.5)], 0)
    assert "reached the end of its branch (depth 2)" in text and "no wrong node" in text


def test_the_last_step_has_no_next_root_unless_exact_sampling_drew_it():
    record = GenerationRecord("m", "h", "cpu", "float32", [[0], [1], [0, 0]], {}, "p", [1], [10], "The",
                              [tree_step([0])], 0.01, "max_new_tokens")
    assert "last step (it ended: max new tokens)" in why_rejected(record.steps, 0, record)
    assert "next step has not been decoded yet" in why_rejected(record.steps, 0, None)  # still streaming
    drew = why_rejected([tree_step([0], drawn=[13])], 0, record)
    assert "the model drew **token 13**" in drew and "rank 2 in head 1's list" in drew


def test_plain_decoding_had_nothing_to_reject():
    assert "nothing was drafted" in why_rejected([root_step(1, "a", 0.5), root_step(2, "b", 0.5)], 0)


def test_the_comparison_tables_both_runs_and_draws_their_accepted_depth_per_step():
    def record(steps: list[StepRecord], seconds: float) -> GenerationRecord:
        tokens = [t for s in steps for t in s.emitted]
        return GenerationRecord("m", "h", "cpu", "float32", [], {}, "p", [1], tokens, "", steps, seconds, "eos")

    first = record([tree_step([0, 1, 3]), tree_step([0])], 1.0)
    second = record([tree_step([0, 1]), tree_step([0, 1])], 2.0)
    html = comparison_html(first, second, True, None, "full-2x2", "chain-4")
    assert "Speed-up 2.00x over chain-4" in html and "✗ differ" in html
    assert "<td>full-2x2</td><td>2.00</td><td>1.00</td><td>4.0</td><td>2</td>" in html
    assert "<td>chain-4</td><td>2.00</td><td>1.00</td><td>2.0</td><td>2</td>" in html
    fig = figures.compare_figure([("full-2x2", [2, 0]), ("chain-4", [1, 1])])
    assert [list(t.y) for t in fig.data] == [[2, 0], [1, 1]]
    assert fig.data[0].name.startswith("full-2x2: 2 steps")


def test_an_uploaded_record_is_read_and_a_bad_one_refused_in_plain_words(tmp_path):
    record = GenerationRecord("/root/cache/SmolLM2", "h", "cpu", "float32", [[0]], {}, "p", [1], [10, 2], "The",
                              [tree_step([0]), root_step(2, "<|im_end|>", 0.9)], 0.01, "eos")
    path = tmp_path / "generation.json"
    path.write_text(json.dumps(record.to_json()))
    assert read_trace(str(path)) == record
    spans = trace_spans(record)
    assert len(spans) == 2 and "im_end" not in spans[1] and "special" in spans[1]
    path.write_text(json.dumps({"format": "medusa-tree/1", "paths": [[0]]}))
    with pytest.raises(InputError, match="not a generation record .the format is 'medusa-tree/1'"):
        read_trace(str(path))
