"""Accuracy tables: validation errors, JSON round trip, reference tables, geometric tail."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from optimizer import (
    ACCURACY_FORMAT,
    REFERENCE_TABLES,
    AccuracyError,
    AccuracyTable,
    accuracy_from_ranks,
    load_accuracy_table,
    reference_table,
    resolve_accuracy,
    save_accuracy_table,
    table_from_json,
    with_geometric_tail,
)


def table_json(**changes: object) -> dict:
    data = {
        "format": ACCURACY_FORMAT,
        "model": "m",
        "heads": "h",
        "top_k": 3,
        "samples": 4,
        "acc": [[0.5, 0.2, 0.1], [0.3, 0.1, 0.05]],
        "ranks": [[0, 1], [2, -1], [0, 0], [5, 3]],
    }
    return data | changes


def test_valid_table_loads_with_ranks_normalised() -> None:
    table = table_from_json(table_json())
    assert (table.num_heads, table.top_k, table.samples) == (2, 3, 4)
    assert table.ranks.tolist() == [[0, 1], [2, -1], [0, 0], [-1, -1]]  # >= top_k becomes -1
    assert not table.ranks.flags.writeable


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"acc": [[0.5, float("nan"), 0.1], [0.3, 0.1, 0.05]]}, r"acc\[0\]\[1\] is NaN"),
        ({"acc": [[0.5, -0.2, 0.1], [0.3, 0.1, 0.05]]}, r"acc\[0\]\[1\] is negative"),
        ({"acc": [[0.5, 0.2, 0.1], [1.5, 0.1, 0.05]]}, r"acc\[1\]\[0\] is 1.5 > 1"),
        ({"acc": [[0.6, 0.3, 0.2], [0.3, 0.1, 0.05]]}, r"acc\[0\] sums to 1.1\d* > 1"),
        ({"acc": [[0.5, 0.2, 0.1], [0.3, 0.1]]}, r"acc\[1\] has 2 values but acc\[0\] has 3"),
        ({"acc": []}, r"acc must be a non-empty list"),
        ({"acc": [[0.5, "x", 0.1]]}, r"acc\[0\]\[1\] is 'x', not a number"),
        ({"top_k": 5}, r"top_k is 5 but the acc rows have 3 values"),
        ({"heads": 3}, r"heads is 3 but acc has 2 rows"),
        ({"ranks": [[0, 1, 2]]}, r"one vector of 2 ranks"),
        ({"ranks": [[0, 1], [2]]}, r"ranks must"),
        ({"ranks": [[0.5, 1.0]]}, r"ranks must be integers"),
        ({"samples": -1}, r"samples must be an integer >= 0"),
        ({"format": "medusa-accuracy/0"}, r"format is 'medusa-accuracy/0'"),
    ],
)
def test_bad_tables_raise_clear_errors(changes: dict, message: str) -> None:
    with pytest.raises(AccuracyError, match=message):
        table_from_json(table_json(**changes))


def test_missing_acc_and_non_object_are_rejected() -> None:
    with pytest.raises(AccuracyError, match="no 'acc'"):
        table_from_json({"format": ACCURACY_FORMAT})
    with pytest.raises(AccuracyError, match="JSON object"):
        table_from_json([1, 2])


def test_file_round_trip_and_bad_json(tmp_path) -> None:
    table = table_from_json(table_json())
    path = tmp_path / "acc.json"
    save_accuracy_table(table, path)
    loaded = load_accuracy_table(path)
    assert loaded == table and loaded.ranks.tolist() == table.ranks.tolist()
    assert resolve_accuracy(str(path)) == table
    path.write_text("{not json")
    with pytest.raises(AccuracyError, match="not valid JSON"):
        load_accuracy_table(path)
    with pytest.raises(AccuracyError, match="is not a file"):
        resolve_accuracy(str(tmp_path / "missing.json"))


def test_reference_tables_are_medusa_top5_differences() -> None:
    assert REFERENCE_TABLES == ("vicuna-7b", "vicuna-13b", "vicuna-33b")
    table = reference_table("vicuna-7b")
    assert table.top_k == 5 and table.num_heads == 5
    assert "medusa_acc.csv" in table.source and "top_k = 5" in table.source
    top1 = [round(row[0], 2) for row in table.acc]
    top5 = [round(sum(row), 2) for row in table.acc]
    assert top1 == [0.56, 0.32, 0.20, 0.15, 0.12]  # DESIGN.md reference numbers
    assert top5 == [0.78, 0.56, 0.42, 0.34, 0.30]
    assert resolve_accuracy("reference:vicuna-13b") == reference_table("vicuna-13b")
    assert "failed" in reference_table("vicuna-33b").source
    with pytest.raises(AccuracyError, match="unknown reference table"):
        reference_table("vicuna-70b")


def test_geometric_tail_extends_without_exceeding_one() -> None:
    base = reference_table("vicuna-7b")
    extended = with_geometric_tail(base, 10)
    assert extended.top_k == 10
    assert np.allclose(extended.acc_array[:, :5], base.acc_array)
    assert (np.diff(extended.acc_array[:, 4:], axis=1) <= 0).all()  # the tail decays
    assert extended.acc_array.sum(axis=1).max() <= 1
    assert "extrapolated" in extended.source
    with pytest.raises(AccuracyError, match="does not extend"):
        with_geometric_tail(base, 5)
    full = AccuracyTable(acc=[[0.6, 0.4]])  # no room left: the tail is scaled to zero
    assert math.isclose(with_geometric_tail(full, 4).acc_array.sum(), 1.0)


def test_accuracy_from_ranks_counts_frequencies() -> None:
    table = accuracy_from_ranks([[0, 1], [0, 7], [1, -1], [2, 0]], top_k=3, model="m")
    assert table.acc == ((0.5, 0.25, 0.25), (0.25, 0.25, 0.0))
    assert table.samples == 4 and table.model == "m"
    assert json.loads(json.dumps(table.to_json()))["ranks"][1] == [0, -1]
