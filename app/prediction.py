"""Predicted against measured speed of an Explore run: the optimiser's cost model (latency profile
and accuracy table) next to what the run really did, so a wrong profile shows at once."""

from __future__ import annotations

from collections.abc import Sequence

from medusa_core import GenerationRecord
from optimizer import AccuracyTable, LatencyProfile, TreeScorer, resolve_length_model
from optimizer.profile_check import check_profile, samples_from_meta

Path_ = tuple[int, ...]
NO_PROFILE = "Measure the latency profile (Optimise tab) to see the predicted speed beside the measured one."


def expected_tokens(tree: Sequence[Path_], table: AccuracyTable | None) -> float | None:
    """Expected tokens per step of the heads' tree under the table (None: no table fits these heads)."""
    if table is None:
        return None
    try:
        # "auto" as the Optimise tab's default: replay of recorded positions when the table has them
        return float(TreeScorer(table, resolve_length_model(table, "auto")).expected_length(tree))
    except ValueError:  # the table has fewer heads or ranks than the tree uses
        return None


def profile_warning(profile: LatencyProfile) -> str:
    check = check_profile(profile.sizes, profile.seconds, samples_from_meta(profile.meta))
    return "" if check.regular else " ⚠ The latency profile is irregular (see the Optimise tab): the prediction is unreliable."


def prediction_note(record: GenerationRecord, tree: Sequence[Path_], table: AccuracyTable | None,
                    profile: LatencyProfile | None) -> str:
    """One sentence: predicted tokens/step, ms/step and tokens/s against the run's measured ones."""
    if profile is None:
        return NO_PROFILE
    steps = record.steps
    step_seconds = sum(s.seconds for s in steps)
    if not steps or step_seconds <= 0:
        return ""
    # The profile's cost of the passes this run really verified (lookup chains included).
    latency = sum(profile.latency(len(s.nodes)) for s in steps) / len(steps)
    measured = (f"measured {len(record.tokens) / len(steps):.2f} tokens/step, {step_seconds / len(steps) * 1000:.0f} ms/step, "
                f"{len(record.tokens) / step_seconds:.1f} tokens/s")
    length = expected_tokens(tree, table)
    if length is None:
        text = f"Predicted {latency * 1000:.0f} ms/step from the latency profile (no accuracy table for these heads); {measured}."
    else:
        speed = length / latency
        text = (f"Predicted {length:.2f} tokens/step, {latency * 1000:.0f} ms/step, {speed:.1f} tokens/s "
                f"(latency profile + accuracy table); {measured}, {len(record.tokens) / step_seconds / speed:.2f}x the prediction.")
        if record.settings.get("lookup_tokens"):
            text += " The prediction counts the heads' tree only, not the tokens the context lookup adds."
    return text + profile_warning(profile)
