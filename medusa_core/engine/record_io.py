"""Reading a generation record back (medusa-generation/1): the inverse of GenerationRecord.to_json.

The writer lives in records.py; the reader is here so that a saved trace (e.g. the explorer's
generation.json from a GPU Space) can be studied elsewhere. Every check says, in plain words,
which field of which step is wrong; derived fields (num_steps, tokens_per_step, ...) are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from itertools import pairwise
from typing import Any

from medusa_core.engine.records import GENERATION_FORMAT, GenerationRecord, Node, StepRecord


class RecordFormatError(ValueError):
    """The data is not a readable medusa-generation/1 record; the message says what is wrong."""


def _field(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise RecordFormatError(f"{where} has no {key!r}")
    value = data[key]
    # bool is an int in Python: a true/false where a number belongs is a broken file, not a 1/0
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise RecordFormatError(f"{where}: {key!r} must be a number, not {value}")
    if not isinstance(value, kind):
        raise RecordFormatError(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
    return value


def _int_list(data: Mapping[str, Any], key: str, where: str) -> list[int]:
    values = _field(data, key, list, where)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise RecordFormatError(f"{where}: {key!r} must be a list of whole numbers")
    return list(values)


def _node(data: Any, where: str) -> Node:
    if not isinstance(data, Mapping):
        raise RecordFormatError(f"{where} is not an object")
    return Node(
        token_id=_field(data, "token_id", int, where),
        text=_field(data, "text", str, where),
        depth=_field(data, "depth", int, where),
        rank=_field(data, "rank", int, where),
        prob=float(_field(data, "prob", (int, float), where)),
        parent=_field(data, "parent", int, where),
        source=_field(data, "source", str, where) if "source" in data else "heads",
    )


def _check_tree(nodes: list[Node], accepted: list[int], where: str) -> None:
    """Parents come before their children and the accepted ids form a path from the root."""
    if not nodes or nodes[0].parent != -1:
        raise RecordFormatError(f"{where}: the first node must be the root (parent -1)")
    for i, node in enumerate(nodes[1:], start=1):
        if not 0 <= node.parent < i:
            raise RecordFormatError(f"{where}: node {i} has parent {node.parent}, not an earlier node")
    if not accepted or accepted[0] != 0:
        raise RecordFormatError(f"{where}: the accepted path must start at the root (node 0)")
    for prev, node in pairwise(accepted):
        if not 0 <= node < len(nodes) or nodes[node].parent != prev:
            raise RecordFormatError(f"{where}: the accepted path {accepted} is not a path of the tree")


def _optional_lists(data: Mapping[str, Any], key: str, where: str, nested: bool) -> Any:
    value = data.get(key)
    if value is None:
        return None
    rows = value if nested else [value]
    if not isinstance(value, list) or not all(
        isinstance(row, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in row) for row in rows
    ):
        raise RecordFormatError(f"{where}: {key!r} must be {'lists' if nested else 'a list'} of token ids")
    return value


def _step(data: Any, index: int) -> StepRecord:
    where = f"step {index + 1}"
    if not isinstance(data, Mapping):
        raise RecordFormatError(f"{where} is not an object")
    nodes = [_node(n, f"{where}, node {i}") for i, n in enumerate(_field(data, "nodes", list, where))]
    accepted = _int_list(data, "accepted", where)
    _check_tree(nodes, accepted, where)
    emitted = _int_list(data, "emitted", where)
    if len(emitted) > len(accepted):  # a step emits its accepted path, cut at EOS or the budget
        raise RecordFormatError(f"{where} emits {len(emitted)} tokens but accepted only {len(accepted)} nodes")
    return StepRecord(
        nodes=nodes,
        accepted=accepted,
        emitted=emitted,
        seconds=float(_field(data, "seconds", (int, float), where)),
        drawn=_optional_lists(data, "drawn", where, nested=False),
        head_topk=_optional_lists(data, "head_topk", where, nested=True),
    )


def record_from_json(data: Any) -> GenerationRecord:
    """A GenerationRecord from its JSON form (GenerationRecord.to_json()); RecordFormatError otherwise."""
    if not isinstance(data, Mapping):
        raise RecordFormatError("a generation record is a JSON object")
    fmt = data.get("format")
    if fmt != GENERATION_FORMAT:
        raise RecordFormatError(f"the format is {fmt!r}, not {GENERATION_FORMAT!r}")
    where = "the record"
    tree = _field(data, "tree", list, where)
    if not all(isinstance(p, list) and all(isinstance(r, int) for r in p) for p in tree):
        raise RecordFormatError("the record's 'tree' must be a list of paths (lists of ranks)")
    settings = _field(data, "settings", dict, where)
    steps = [_step(s, i) for i, s in enumerate(_field(data, "steps", list, where))]
    return GenerationRecord(
        model=_field(data, "model", str, where),
        heads=_field(data, "heads", str, where),
        device=_field(data, "device", str, where),
        dtype=_field(data, "dtype", str, where),
        tree=[list(p) for p in tree],
        settings=dict(settings),
        prompt=_field(data, "prompt", str, where),
        prompt_tokens=_int_list(data, "prompt_tokens", where),
        tokens=_int_list(data, "tokens", where),
        text=_field(data, "text", str, where),
        steps=steps,
        seconds=float(_field(data, "seconds", (int, float), where)),
        stop_reason=_field(data, "stop_reason", str, where),
    )


def read_record(text: str) -> GenerationRecord:
    """A GenerationRecord from the text of a generation.json; RecordFormatError if it is not one."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise RecordFormatError(f"not valid JSON ({err})") from err
    return record_from_json(data)
