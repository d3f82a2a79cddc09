"""Predicted speed of a whole decoding setup (heads' tree + context lookup) from the cost model.

A prediction joins the two models the optimiser owns: tokens per step from the accuracy table
(:mod:`optimizer.expected_length`) and seconds per step from the latency profile
(:mod:`optimizer.profile`). It is what the app and the README set beside a measured run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from medusa_core.spec.lookup import LookupConfig
from medusa_core.spec.trees import validate_tree

from .accuracy import AccuracyTable
from .expected_length import TreeScorer, resolve_length_model
from .profile import LatencyProfile


@dataclass(frozen=True)
class Prediction:
    tokens_per_step: float
    seconds_per_step: float | None  # None without a latency profile

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
    """Tokens per step and seconds per step of decoding with ``tree`` and ``lookup``."""
    paths = validate_tree(tree)
    length = TreeScorer(table, resolve_length_model(table, model)).expected_length(paths)
    tokens = len(paths) + 1 + (lookup.tokens if lookup else 0)
    return Prediction(length, None if profile is None else profile.latency(tokens))
