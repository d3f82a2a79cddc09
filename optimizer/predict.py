"""Predicted speed of a whole decoding setup (heads' tree + context lookup) from the cost model.

A prediction joins the two models the optimiser owns: tokens per step from the accuracy table
(:mod:`optimizer.expected_length`) and seconds per step from the latency profile
(:mod:`optimizer.profile`). It is what the app and the README set beside a measured run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from medusa_core.spec.lookup import LookupConfig
from medusa_core.spec.trees import validate_tree

from .accuracy import AccuracyTable
from .expected_length import TreeScorer, resolve_length_model
from .profile import LatencyProfile
from .walk import walk


@dataclass(frozen=True)
class Prediction:
    tokens_per_step: float
    seconds_per_step: float | None  # None without a latency profile
    length_model: str  # "walk" (the decoding walk over the table's answers) or a position-average model

    @property
    def tokens_per_second(self) -> float | None:
        return None if self.seconds_per_step is None else self.tokens_per_step / self.seconds_per_step


def predict_setup(
    table: AccuracyTable,
    profile: LatencyProfile | None,
    tree: Sequence[Sequence[int]],
    lookup: LookupConfig | None = None,
    model: str = "auto",
) -> Prediction:
    """Tokens per step and seconds per step of greedy decoding with ``tree`` and ``lookup``.

    ``auto``: the decoding walk when the table records its answers' positions (``segments``),
    else the position average (``empirical`` or ``independence``). Seconds come from the step's
    cost model, each step priced with the lookup chain the walk drafted there (the full chain
    without a walk)."""
    paths = validate_tree(tree)
    if model in ("auto", "walk") and table.has_ranks and table.segments:
        result = walk(table, paths, lookup)
        length, chains, leaves, name = result.tokens_per_step, result.chains, result.leaves, "walk"
    else:
        name = resolve_length_model(table, model)
        length = TreeScorer(table, name, lookup).expected_length(paths)
        chains, leaves = np.array([lookup.tokens if lookup else 0]), None
    seconds = None if profile is None else profile.mean_step_seconds(paths, chains, lookup is not None, leaves=leaves)
    return Prediction(length, seconds, name)
