"""Calibration records, per position, what a context lookup would have drafted and how much was right."""

import numpy as np

from medusa_core.spec.lookup import LookupConfig
from medusa_core.training.calibration import LOOKUP_NGRAM_RANGES, calibrate, lookup_outcome, lookup_outcomes
from optimizer.expected_length import TreeScorer
from optimizer.walk import walk
from tiny_models import medusa_of, random_heads, tiny_base


def test_a_lookup_outcome_is_the_drafted_chain_and_its_right_prefix():
    tokens = [5, 6, 7, 8, 9, 1, 5, 6, 7, 8, 2]
    # state t = 6: the context ends 1, 5, 6 (the pending root, index 7); "1 5 6" never occurred but
    # "5 6" did at index 0, drafting 7 8 9 1; the answer goes on 7 8 2: two right
    assert lookup_outcome(tokens, 6, LookupConfig(4, 3, 2)) == (4, 2)
    assert lookup_outcome(tokens, 0, LookupConfig(4, 3, 2)) == (0, 0)  # nothing earlier to match
    found = lookup_outcomes(tokens, 5, 3, [(2, 3), (3, 3)], 4)
    assert [len(d) for d, _ in found] == [3, 3] and all(r <= d for dd, rr in found for d, r in zip(dd, rr))


def test_calibration_records_segments_and_lookups_the_walk_can_replay():
    medusa = medusa_of(tiny_base("llama"), random_heads(3))
    table = calibrate(medusa, ["1 2 3 1 2 3 1 2", "4 5 6"], max_new_tokens=12, top_k=4)
    assert len(table.segments) == 2 and sum(table.segments) == len(table.ranks)
    assert {(o.min_ngram, o.max_ngram) for o in table.lookups} == set(LOOKUP_NGRAM_RANGES)
    lookup = LookupConfig(8, 3, 2)
    outcomes = table.lookup_outcomes(2, 3)
    assert np.all(outcomes.right <= outcomes.proposed)
    scorer = TreeScorer(table, "empirical", lookup)
    assert np.all(scorer.replay_accepted([(0,)]) >= np.minimum(outcomes.right, 8))
    assert walk(table, [(0,)], lookup).steps <= sum(table.segments)
