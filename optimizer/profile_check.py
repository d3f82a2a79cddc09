"""Is a latency profile regular enough to predict speed from? Torch-free.

A pass over more tokens does at least the work of a pass over fewer, so on a quiet machine the
profile rises with the size (up to timing noise), and repeated timings of one size agree. A profile
taken while other work ran breaks one or both: a 1-token pass slower than 2-8 token passes, or
rounds of one size that differ by half. Speeds predicted from such a profile are not worth much.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

NON_MONOTONE_TOLERANCE = 0.10  # a bigger pass may look up to 10% faster (timing noise) before it counts
SPREAD_LIMIT = 0.30  # (slowest - fastest) / median of one size's rounds


@dataclass(frozen=True)
class ProfileCheck:
    """What is irregular about a profile, in words; no problems means regular."""

    problems: tuple[str, ...]

    @property
    def regular(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        if self.regular:
            return "regular: passes take longer as they grow, and repeated timings agree"
        return ("irregular: " + "; ".join(self.problems)
                + ". The machine was probably busy while it was measured, so speeds predicted from this profile "
                "are unreliable: measure it again when the machine is quiet")


def tokens(n: int) -> str:
    return f"{n} token" + ("" if n == 1 else "s")


def size_range(sizes: Sequence[int]) -> str:
    return tokens(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]} tokens"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def faster_bigger_passes(sizes: Sequence[int], seconds: Sequence[float], tolerance: float) -> str | None:
    """The worst case of bigger passes timed faster than a smaller one, in words (None: monotone)."""
    worst: tuple[int, list[int]] | None = None
    for i in range(len(sizes)):
        faster = [j for j in range(i + 1, len(sizes)) if seconds[j] < seconds[i] * (1 - tolerance)]
        if faster and (worst is None or len(faster) > len(worst[1])):
            worst = (i, faster)
    if worst is None:
        return None
    slow, faster = worst
    fastest = min(seconds[j] for j in faster)
    return (f"{tokens(sizes[slow])} took {ms(seconds[slow])} but {size_range([sizes[j] for j in faster])} took less "
            f"(down to {ms(fastest)})")


def widest_spread(samples: Mapping[int, Sequence[float]], limit: float) -> str | None:
    """The size whose repeated timings disagree most, in words, if beyond `limit` (None: they agree)."""
    spreads = {}
    for size, times in samples.items():
        if len(times) >= 2 and statistics.median(times) > 0:
            spreads[size] = (max(times) - min(times)) / statistics.median(times)
    if not spreads:
        return None
    size = max(spreads, key=spreads.get)
    if spreads[size] <= limit:
        return None
    times = samples[size]
    return (f"repeated timings of one size differ by up to {spreads[size]:.0%} of their median "
            f"({tokens(size)}: {ms(min(times))} to {ms(max(times))})")


def check_profile(
    sizes: Sequence[int],
    seconds: Sequence[float],
    samples: Mapping[int, Sequence[float]] | None = None,
    tolerance: float = NON_MONOTONE_TOLERANCE,
    spread_limit: float = SPREAD_LIMIT,
) -> ProfileCheck:
    """Check a profile (median seconds per size, and optionally every round's seconds per size)."""
    problems = [faster_bigger_passes(sizes, seconds, tolerance), widest_spread(samples or {}, spread_limit)]
    return ProfileCheck(tuple(p for p in problems if p))


def samples_from_meta(meta: Mapping[str, object]) -> dict[int, list[float]]:
    """Per-size round timings stored in a profile's meta under "round_seconds" (JSON keys are strings)."""
    rounds = meta.get("round_seconds")
    if not isinstance(rounds, Mapping):
        return {}
    return {int(size): [float(t) for t in times] for size, times in rounds.items()}  # type: ignore[union-attr]
