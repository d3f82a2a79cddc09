"""Who gets the credit for accepted tokens: each head, and the context lookup (plain data, no Gradio).

A step's accepted path goes root -> depth 1 -> depth 2 ...; the node at depth h is head h's guess
only when the heads proposed it (source "heads", or "heads+lookup" when both drafters proposed the
same token). A node copied from the context alone is the lookup's, not a head's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from medusa_core import StepRecord

HEADS_SOURCES = frozenset({"heads", "heads+lookup"})


def from_heads(source: str) -> bool:
    return source in HEADS_SOURCES


def from_lookup(source: str) -> bool:
    return "lookup" in source


@dataclass(frozen=True)
class Acceptance:
    """Per head (1..num_heads): share of steps whose accepted path has that head's own token at its
    depth, or None when the tree has no node at that depth; and the lookup's share of steps."""

    heads: tuple[float | None, ...]
    lookup: float | None  # None: the lookup was off


def acceptance(steps: Sequence[StepRecord], tree_depth: int, num_heads: int, lookup_on: bool) -> Acceptance:
    count = max(1, len(steps))

    def head_share(depth: int) -> float | None:
        if depth > tree_depth:
            return None
        hits = sum(len(s.accepted) > depth and from_heads(s.nodes[s.accepted[depth]].source) for s in steps)
        return hits / count

    copied = sum(any(from_lookup(s.nodes[i].source) for i in s.accepted[1:]) for s in steps) / count
    return Acceptance(tuple(head_share(d) for d in range(1, num_heads + 1)), copied if lookup_on else None)
