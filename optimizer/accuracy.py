"""Accuracy tables (format "medusa-accuracy/1"): loading, validation and built-in references.

A table holds, for every Medusa head h and rank k < top_k, ``acc[h][k]``: the measured probability
that head h's rank-k token equals the base model's greedy token at that offset. The ranks of one
head are disjoint events, so a row sums to at most 1 (its top-k accuracy). Optionally the table
carries ``ranks``: one vector per recorded position with the rank of the true token at every head
(-1, or any value >= top_k, when it was not in that head's top-k). Those vectors feed the
empirical replay in :mod:`optimizer.expected_length`. With ranks a table may also carry
``segments`` (positions per calibration prompt, in order: a prompt's positions are consecutive
states of one greedy answer, which the decoding walk replays) and ``lookups``: per n-gram range,
what a context lookup would have drafted at every position and how much of it was right.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ACCURACY_FORMAT = "medusa-accuracy/1"
REFERENCE_PREFIX = "reference:"
MISS = -1  # rank recorded when the true token was not in a head's top-k


class AccuracyError(ValueError):
    """An accuracy table that cannot be used; the message says which entry is wrong."""


@dataclass(frozen=True)
class LookupOutcomes:
    """Per recorded position: the chain a context lookup with this n-gram range drafts there
    (``proposed`` tokens, 0 without a match, at most ``max_tokens``) and how many of its leading
    tokens equal the answer's next tokens (``right`` <= ``proposed``). A lookup of L <= max_tokens
    tokens drafts min(proposed, L) and is right for min(right, L): the match does not depend on L."""

    min_ngram: int
    max_ngram: int
    max_tokens: int
    proposed: np.ndarray = field(repr=False)  # [positions] int
    right: np.ndarray = field(repr=False)  # [positions] int

    def __post_init__(self) -> None:
        if not 1 <= self.min_ngram <= self.max_ngram or self.max_tokens < 1:
            raise AccuracyError(f"lookup outcomes need 1 <= min_ngram <= max_ngram and max_tokens >= 1, got "
                                f"{self.min_ngram}, {self.max_ngram}, {self.max_tokens}")
        proposed, right = (np.asarray(a, dtype=np.int64).reshape(-1) for a in (self.proposed, self.right))
        if proposed.shape != right.shape:
            raise AccuracyError(f"lookup outcomes: {len(proposed)} 'proposed' but {len(right)} 'right' values")
        if ((right < 0) | (right > proposed) | (proposed > self.max_tokens)).any():
            raise AccuracyError("lookup outcomes need 0 <= right <= proposed <= max_tokens at every position")
        for name, array in (("proposed", proposed), ("right", right)):
            array.flags.writeable = False
            object.__setattr__(self, name, array)

    def to_json(self) -> dict[str, Any]:
        return {"min_ngram": self.min_ngram, "max_ngram": self.max_ngram, "max_tokens": self.max_tokens,
                "proposed": self.proposed.tolist(), "right": self.right.tolist()}


def lookup_outcomes_from_json(data: object) -> LookupOutcomes:
    if not isinstance(data, dict) or not {"min_ngram", "max_ngram", "max_tokens", "proposed", "right"} <= set(data):
        raise AccuracyError("each 'lookups' entry needs min_ngram, max_ngram, max_tokens, proposed and right")
    return LookupOutcomes(int(data["min_ngram"]), int(data["max_ngram"]), int(data["max_tokens"]),
                          np.asarray(data["proposed"]), np.asarray(data["right"]))


@dataclass(frozen=True)
class AccuracyTable:
    """Per-head, per-rank acceptance probabilities, validated on construction.

    ``ranks`` (optional) is stored as a read-only int array [positions, heads] with every rank
    outside [0, top_k) replaced by ``MISS``.
    """

    acc: tuple[tuple[float, ...], ...]  # [heads][top_k]
    model: str = ""
    heads: str | int = ""
    samples: int = 0
    ranks: np.ndarray | None = field(default=None, compare=False, repr=False)
    source: str = ""
    segments: tuple[int, ...] = ()  # positions per calibration prompt (sum = len(ranks)); () = unknown
    lookups: tuple[LookupOutcomes, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "acc", _checked_acc(self.acc))
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 0:
            raise AccuracyError(f"samples must be an integer >= 0, got {self.samples!r}")
        if isinstance(self.heads, int) and not isinstance(self.heads, bool):
            if self.heads != len(self.acc):
                raise AccuracyError(f"heads is {self.heads} but acc has {len(self.acc)} rows")
        if self.ranks is not None:
            object.__setattr__(self, "ranks", _checked_ranks(self.ranks, len(self.acc), self.top_k))
        positions = 0 if self.ranks is None else len(self.ranks)
        segments = tuple(int(n) for n in self.segments)
        if segments and (min(segments) < 0 or sum(segments) != positions):
            raise AccuracyError(f"segments must be counts >= 0 adding up to the {positions} ranked positions, "
                                f"got {len(segments)} adding up to {sum(segments)}")
        object.__setattr__(self, "segments", segments)
        for outcomes in self.lookups:
            if len(outcomes.proposed) != positions:
                raise AccuracyError(f"lookup outcomes ({outcomes.min_ngram}-{outcomes.max_ngram}-grams) cover "
                                    f"{len(outcomes.proposed)} positions, the ranks {positions}")
        object.__setattr__(self, "lookups", tuple(self.lookups))

    @property
    def num_heads(self) -> int:
        return len(self.acc)

    @property
    def top_k(self) -> int:
        return len(self.acc[0])

    @property
    def has_ranks(self) -> bool:
        return self.ranks is not None and len(self.ranks) > 0

    @cached_property
    def acc_array(self) -> np.ndarray:
        """``acc`` as a read-only float array [heads, top_k]."""
        array = np.array(self.acc, dtype=np.float64)
        array.flags.writeable = False
        return array

    def lookup_outcomes(self, min_ngram: int, max_ngram: int) -> LookupOutcomes | None:
        """The recorded outcomes of a lookup with this n-gram range; None when not recorded."""
        return next((o for o in self.lookups if (o.min_ngram, o.max_ngram) == (min_ngram, max_ngram)), None)

    def top_k_accuracy(self) -> np.ndarray:
        """Cumulative accuracy [heads, top_k]: entry [h, k] = P(true token within head h's top-(k+1))."""
        return np.cumsum(self.acc_array, axis=1)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": ACCURACY_FORMAT,
            "model": self.model,
            "heads": self.heads,
            "top_k": self.top_k,
            "samples": self.samples,
            "acc": [list(row) for row in self.acc],
        }
        if self.ranks is not None:
            data["ranks"] = self.ranks.tolist()
        if self.source:
            data["source"] = self.source
        if self.segments:
            data["segments"] = list(self.segments)
        if self.lookups:
            data["lookups"] = [o.to_json() for o in self.lookups]
        return data


def _checked_acc(acc: object) -> tuple[tuple[float, ...], ...]:
    if not isinstance(acc, Sequence) or isinstance(acc, (str, bytes)) or len(acc) == 0:
        raise AccuracyError("acc must be a non-empty list with one list of per-rank values per head")
    rows: list[tuple[float, ...]] = []
    for h, row in enumerate(acc):
        if not isinstance(row, Sequence) or isinstance(row, (str, bytes)) or len(row) == 0:
            raise AccuracyError(f"acc[{h}] must be a non-empty list of per-rank accuracies")
        if rows and len(row) != len(rows[0]):
            raise AccuracyError(f"acc[{h}] has {len(row)} values but acc[0] has {len(rows[0])}")
        rows.append(tuple(_checked_probability(value, f"acc[{h}][{k}]") for k, value in enumerate(row)))
        total = math.fsum(rows[-1])
        if total > 1 + 1e-6:
            raise AccuracyError(
                f"acc[{h}] sums to {total:.6f} > 1: the ranks of one head are disjoint events, "
                "so per-rank accuracies must add up to at most 1 (store per-rank, not top-k, values)"
            )
    return tuple(rows)


def _checked_probability(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AccuracyError(f"{where} is {value!r}, not a number")
    number = float(value)
    if math.isnan(number):
        raise AccuracyError(f"{where} is NaN")
    if number < 0:
        raise AccuracyError(f"{where} is negative ({number})")
    if number > 1:
        raise AccuracyError(f"{where} is {number} > 1 (accuracies are probabilities)")
    return number


def _checked_ranks(ranks: object, num_heads: int, top_k: int) -> np.ndarray:
    try:
        array = np.asarray(ranks)
    except ValueError as err:  # ragged lists
        raise AccuracyError(f"ranks must be a list of equal-length rank vectors: {err}") from err
    if array.size == 0:
        array = array.reshape(0, num_heads)
    if array.ndim != 2 or array.shape[1] != num_heads:
        raise AccuracyError(
            f"ranks must hold one vector of {num_heads} ranks (one per head) per position, "
            f"got shape {list(array.shape)}"
        )
    if array.dtype.kind not in "iu":
        raise AccuracyError("ranks must be integers (use -1 for 'not in the top-k')")
    array = array.astype(np.int64)
    array[(array < 0) | (array >= top_k)] = MISS
    array.flags.writeable = False
    return array


def table_from_json(data: object) -> AccuracyTable:
    """Build a validated table from a parsed medusa-accuracy/1 JSON object."""
    if not isinstance(data, dict):
        raise AccuracyError("an accuracy table must be a JSON object")
    if data.get("format") != ACCURACY_FORMAT:
        raise AccuracyError(f"accuracy table format is {data.get('format')!r}, expected {ACCURACY_FORMAT!r}")
    if "acc" not in data:
        raise AccuracyError("accuracy table has no 'acc' list")
    table = AccuracyTable(
        acc=data["acc"],
        model=str(data.get("model", "")),
        heads=data.get("heads", ""),
        samples=data.get("samples", len(data.get("ranks") or [])),
        ranks=data.get("ranks"),
        source=str(data.get("source", "")),
        segments=tuple(data.get("segments") or ()),
        lookups=tuple(lookup_outcomes_from_json(o) for o in data.get("lookups") or ()),
    )
    declared_top_k = data.get("top_k", table.top_k)
    if declared_top_k != table.top_k:
        raise AccuracyError(f"top_k is {declared_top_k!r} but the acc rows have {table.top_k} values")
    return table


def load_accuracy_table(path: str | Path) -> AccuracyTable:
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise AccuracyError(f"accuracy table {path} is not valid JSON: {err}") from err
    return table_from_json(data)


def save_accuracy_table(table: AccuracyTable, path: str | Path) -> None:
    Path(path).write_text(json.dumps(table.to_json(), separators=(",", ":")))


def accuracy_from_ranks(ranks: np.ndarray | Sequence[Sequence[int]], top_k: int, **info: Any) -> AccuracyTable:
    """Table whose per-rank accuracies are the frequencies of the recorded rank vectors."""
    array = np.asarray(ranks, dtype=np.int64)
    if array.ndim != 2 or array.shape[0] == 0:
        raise AccuracyError("ranks must be a non-empty list of rank vectors")
    counts = np.stack([np.bincount(col[(col >= 0) & (col < top_k)], minlength=top_k) for col in array.T])
    acc = counts / array.shape[0]
    return AccuracyTable(acc=acc.tolist(), samples=int(array.shape[0]), ranks=array, **info)


# Medusa-1 heads (5 heads, 1 ResBlock each) on Vicuna-v1.3: cumulative top-1..top-5 accuracy per
# head, from FasterDecoding/Medusa assets/medusa_acc.csv (W&B export, columns train/medusa{h}_top{k}).
_MEDUSA_TOP5: dict[str, tuple[tuple[float, ...], ...]] = {
    "vicuna-7b": (
        (0.5603876709938049, 0.6717196702957153, 0.7271371483802795, 0.7599403262138367, 0.7799453139305115),
        (0.31635186076164246, 0.4235834777355194, 0.4850894510746002, 0.5282057523727417, 0.5625),
        (0.2010437250137329, 0.28789758682250977, 0.3475397527217865, 0.3834492862224579, 0.4168737530708313),
        (0.14736579358577728, 0.22502483427524567, 0.27373260259628296, 0.3108846843242645, 0.3397117257118225),
        (0.11754472553730012, 0.18663020431995392, 0.23459243774414065, 0.2721172869205475, 0.2998260259628296),
    ),
    "vicuna-13b": (
        (0.5939363837242126, 0.705268383026123, 0.7578279972076416, 0.7924950122833252, 0.8161033391952515),
        (0.3397117257118225, 0.439985066652298, 0.5068339705467224, 0.5464711785316467, 0.580268383026123),
        (0.216078519821167, 0.30852383375167847, 0.3612077236175537, 0.4029572308063507, 0.4363816976547241),
        (0.14997513592243197, 0.23173458874225616, 0.28777334094047546, 0.32343438267707825, 0.3541252315044403),
        (0.12226639688014984, 0.1957007795572281, 0.243414506316185, 0.2790755331516266, 0.3070327937602997),
    ),
    "vicuna-33b": (
        (0.6045850515365601, 0.7161898016929626, 0.7648836374282837, 0.798293948173523, 0.8222854137420654),
        (0.3557846248149872, 0.4689888060092926, 0.5287009477615356, 0.5692198276519775, 0.59605473279953),
        (0.22463124990463257, 0.31970855593681335, 0.3785320818424225, 0.4210058748722077, 0.4462413489818573),
        (0.15958771109580994, 0.24880042672157288, 0.30726853013038635, 0.34796518087387085, 0.37551093101501465),
        (0.13701795041561127, 0.20668207108974457, 0.2621290385723114, 0.29838281869888306, 0.32575085759162903),
    ),
}
_MEDUSA_SOURCE = (
    "FasterDecoding/Medusa assets/medusa_acc.csv: training-time top-1..top-5 accuracy of Medusa-1 "
    "heads (5 heads, 1 layer) on {model} (W&B export{note}); per-rank = differences of top-k; "
    "top_k = 5 because ranks 5-9 are not published"
)
REFERENCE_TABLES: tuple[str, ...] = tuple(_MEDUSA_TOP5)


def reference_table(name: str) -> AccuracyTable:
    """A built-in table: ``vicuna-7b``, ``vicuna-13b`` or ``vicuna-33b`` (Medusa's published heads).

    These have top_k = 5: Medusa published only top-1..top-5, so rank k's accuracy is
    top-(k+1) minus top-k and ranks 5-9 (which Medusa's own trees use) are absent. A tree node of
    rank >= 5 therefore scores 0 under these tables; :func:`with_geometric_tail` extends a table
    when a figure for such trees is wanted. The 33B run is marked "failed" in the CSV (it stopped
    early), so its figures come from a partly trained head.
    """
    name = name.removeprefix(REFERENCE_PREFIX)
    if name not in _MEDUSA_TOP5:
        raise AccuracyError(f"unknown reference table {name!r}; choose from {', '.join(REFERENCE_TABLES)}")
    top = np.array(_MEDUSA_TOP5[name])
    per_rank = np.diff(top, axis=1, prepend=0.0)
    model = f"lmsys/{name}-v1.3"
    note = ", run state 'failed'" if name == "vicuna-33b" else ""
    return AccuracyTable(
        acc=per_rank.tolist(),
        model=model,
        heads=f"FasterDecoding/medusa-{name}-v1.3",
        source=_MEDUSA_SOURCE.format(model=model, note=note),
    )


def with_geometric_tail(table: AccuracyTable, top_k: int) -> AccuracyTable:
    """Extend every head to ``top_k`` ranks with a geometric tail (an extrapolation, labelled so).

    Rank k >= the table's top_k gets ``acc[h][last] * q**(k - last)`` with
    ``q = acc[h][last] / acc[h][last - 1]`` (capped below 1), scaled down if needed so that the
    row still sums to at most 1. Only an estimate: use it to score trees that reach beyond the
    measured ranks, never as a measurement.
    """
    if top_k <= table.top_k:
        raise AccuracyError(f"top_k {top_k} does not extend the table's top_k {table.top_k}")
    if table.top_k < 2:
        raise AccuracyError("a geometric tail needs at least two measured ranks per head")
    rows = []
    for row in table.acc_array:
        ratio = min(row[-1] / row[-2], 0.999) if row[-2] > 0 else 0.0
        tail = row[-1] * ratio ** np.arange(1, top_k - table.top_k + 1)
        room = max(1.0 - row.sum(), 0.0)
        if tail.sum() > room:
            tail *= room / tail.sum()
        rows.append(np.concatenate([row, tail]).tolist())
    return AccuracyTable(
        acc=rows,
        model=table.model,
        heads=table.heads,
        samples=table.samples,
        source=f"{table.source}; ranks {table.top_k}-{top_k - 1} extrapolated geometrically (not measured)",
    )


def resolve_accuracy(spec: str) -> AccuracyTable:
    """``reference:NAME`` for a built-in table, otherwise the path of a medusa-accuracy/1 file."""
    if spec.startswith(REFERENCE_PREFIX):
        return reference_table(spec)
    if not Path(spec).is_file():
        raise AccuracyError(
            f"accuracy table {spec!r} is not a file; use a medusa-accuracy/1 JSON file or "
            f"{', '.join(REFERENCE_PREFIX + n for n in REFERENCE_TABLES)}"
        )
    return load_accuracy_table(spec)
