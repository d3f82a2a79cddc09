"""The decoding walk: replay greedy decoding step by step over a calibration table's answers.

The position average of :mod:`optimizer.expected_length` weighs every position of an answer
alike, but decoding visits only the positions where a step starts: a step that accepts a nodes
from position t lands on t + 1 + a. Right guesses cluster (a copied list, a stock phrase), and a
step through a cluster skips the rest of it, so the average over visited positions is lower than
over all of them. Greedy decoding is lossless, so on the calibration prompts the decoder's
trajectory is the recorded answer itself: walking it with the replayed acceptance gives the
decoder's tokens per step there, and the lookup chain drafted at the visited positions (what the
step's cost depends on). A table's ``segments`` say where each prompt's answer starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from medusa_core.spec.lookup import LookupConfig

from .accuracy import AccuracyTable
from .expected_length import LengthModelError, TreeScorer


@dataclass(frozen=True)
class Walk:
    tokens: int  # emitted over all the walked answers
    steps: int
    chain: float  # mean lookup chain drafted per step (0 without a lookup)

    @property
    def tokens_per_step(self) -> float:
        return self.tokens / max(1, self.steps)


def walk_positions(accepted: np.ndarray, segments: Sequence[int]) -> list[int]:
    """Indices of the positions decoding visits: per segment from its first position, then
    1 + accepted further each step, until the segment ends."""
    visited, start = [], 0
    for length in segments:
        t = 0
        while t < length:
            visited.append(start + t)
            t += 1 + int(accepted[start + t])
        start += length
    return visited


def walk(table: AccuracyTable, tree: Sequence[Sequence[int]], lookup: LookupConfig | None = None) -> Walk:
    """Tokens and steps of greedy decoding with this tree and lookup over the table's answers."""
    if not table.has_ranks or not table.segments:
        raise LengthModelError("the decoding walk needs a table with per-position 'ranks' and 'segments' "
                               "(python -m medusa_core calibrate records both)")
    scorer = TreeScorer(table, "empirical", lookup)
    accepted = scorer.replay_accepted(tree)  # [P]
    visited = walk_positions(accepted, table.segments)
    chain = 0.0
    if lookup is not None:
        outcomes = table.lookup_outcomes(lookup.min_ngram, lookup.max_ngram)
        assert outcomes is not None  # the scorer checked
        chain = float(np.minimum(outcomes.proposed[visited], lookup.tokens).mean())
    return Walk(int((1 + accepted[visited]).sum()), len(visited), chain)
