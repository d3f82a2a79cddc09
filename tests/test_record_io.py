"""medusa_core.engine.record_io: a saved generation record reads back as the record that was written."""

from __future__ import annotations

import json

import pytest

from medusa_core import GenerationRecord, Node, StepRecord
from medusa_core.engine.record_io import RecordFormatError, read_record, record_from_json


def sample_record() -> GenerationRecord:
    nodes = [Node(5, "A", 0, -1, 0.9, -1, "root"), Node(6, "B", 1, 0, 0.5, 0), Node(7, "C", 1, 1, 0.2, 0),
             Node(8, "D", 2, 0, 0.4, 1), Node(9, "E", 1, -1, 0.0, 0, "lookup")]
    first = StepRecord(nodes, [0, 1, 3], [5, 6, 8], 0.01, None, [[6, 7], [8, 1]])
    second = StepRecord([Node(2, "F", 0, -1, 0.7, -1, "root")], [0], [2], 0.02, [2], None)
    return GenerationRecord("m", "h", "cpu", "float32", [[0], [1], [0, 0]], {"mode": "greedy", "lookup_tokens": 1},
                            "p", [1, 2], [5, 6, 8, 2], "ABDF", [first, second], 0.03, "eos")


def test_a_record_reads_back_equal_to_the_one_written():
    record = sample_record()
    assert read_record(json.dumps(record.to_json())) == record
    assert record_from_json(json.loads(json.dumps(record.to_json()))) == record


def broken(change) -> dict:
    data = json.loads(json.dumps(sample_record().to_json()))
    change(data)
    return data


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(format="medusa-tree/1"), "the format is 'medusa-tree/1'"),
        (lambda d: d.pop("steps"), "the record has no 'steps'"),
        (lambda d: d.update(tokens="abc"), "'tokens' has the wrong type"),
        (lambda d: d["steps"][0]["nodes"][1].pop("prob"), "step 1, node 1 has no 'prob'"),
        (lambda d: d["steps"][0]["nodes"][3].update(parent=7), "node 3 has parent 7"),
        (lambda d: d["steps"][0].update(accepted=[0, 2, 3]), "is not a path of the tree"),
        (lambda d: d["steps"][1].update(emitted=[1, 2]), "emits 2 tokens but accepted only 1"),
        (lambda d: d["steps"][0].update(head_topk=[6, 7]), "'head_topk' must be lists of token ids"),
        (lambda d: d.update(seconds=True), "'seconds' must be a number"),
    ],
)
def test_a_broken_record_is_refused_saying_what_is_wrong(change, message):
    with pytest.raises(RecordFormatError, match=message.replace("(", r"\(").replace("[", r"\[")):
        record_from_json(broken(change))


def test_not_json_and_not_an_object_are_refused():
    with pytest.raises(RecordFormatError, match="not valid JSON"):
        read_record("{")
    with pytest.raises(RecordFormatError, match="JSON object"):
        read_record("[1, 2]")
