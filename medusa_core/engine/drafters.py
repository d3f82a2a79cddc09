"""Drafters propose candidate tokens under the root; their drafts merge into one tree per step.

In the spirit of transformers' `CandidateGenerator`: each drafter turns what decoding knows at a
step (the context, the pending root, the heads' top-k) into a small tree of tokens. Drafts are
merged under one root with equal sibling tokens made one node, so no row is verified twice and
exact sampling sees distinct children. A new drafter is one more class here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol, Sequence

from medusa_core.spec.lookup import LookupConfig, find_continuation
from medusa_core.spec.trees import Path_

ROOT = -1  # a draft node's parent when it hangs under the root


@dataclass(frozen=True)
class DraftContext:
    """What a drafter may read at a step, all host-side."""

    tokens: Sequence[int]  # the sequence so far, the pending root last
    head_tokens: Sequence[Sequence[int]]  # [K][k] the heads' top-k token ids at the last accepted position
    head_probs: Sequence[Sequence[float]]  # [K][k] their probabilities


@dataclass(frozen=True)
class Draft:
    """A drafter's tree: per node its token, its parent (an earlier node of the draft, or ROOT),
    the probability its drafter gave it (0: unknown) and its rank in a head's top-k (-1: none)."""

    source: str
    tokens: tuple[int, ...]
    parents: tuple[int, ...]
    probs: tuple[float, ...]
    ranks: tuple[int, ...]


class Drafter(Protocol):
    source: str

    def draft(self, ctx: DraftContext) -> Draft: ...


@dataclass(frozen=True)
class HeadsDrafter:
    """The heads' tree: path (r0, .., rd) is head d's rank-rd token under the node of (r0, .., rd-1)."""

    paths: tuple[Path_, ...]  # validated, in (depth, path) order
    source: str = "heads"

    @functools.cached_property
    def parents(self) -> tuple[int, ...]:
        """Each path's parent within the draft (ROOT for depth 1), fixed for the whole generation."""
        index = {p: i for i, p in enumerate(self.paths)}
        return tuple(index[p[:-1]] if len(p) > 1 else ROOT for p in self.paths)

    def draft(self, ctx: DraftContext) -> Draft:
        return Draft(
            self.source,
            tuple(int(ctx.head_tokens[len(p) - 1][p[-1]]) for p in self.paths),
            self.parents,
            tuple(float(ctx.head_probs[len(p) - 1][p[-1]]) for p in self.paths),
            tuple(p[-1] for p in self.paths),
        )


@dataclass(frozen=True)
class LookupDrafter:
    """Context lookup: the tokens that followed the latest earlier match of the context's end."""

    config: LookupConfig
    source: str = "lookup"

    def draft(self, ctx: DraftContext) -> Draft:
        chain = find_continuation(ctx.tokens, self.config)
        return Draft(
            self.source, tuple(chain), tuple(range(-1, len(chain) - 1)), (0.0,) * len(chain), (-1,) * len(chain)
        )


def drafters_for(paths: tuple[Path_, ...], lookup: LookupConfig | None) -> list[Drafter]:
    """The drafters a step runs: the heads' tree first (its nodes lead the layout), then the
    context lookup. A new drafter is a class above and one line here."""
    drafters: list[Drafter] = [HeadsDrafter(paths)] if paths else []
    return drafters + ([LookupDrafter(lookup)] if lookup else [])


@dataclass(frozen=True)
class MergedTree:
    """One step's candidate tree: node 0 is the root; the first draft's nodes follow in order."""

    tokens: tuple[int, ...]
    parents: tuple[int, ...]
    probs: tuple[float, ...]
    ranks: tuple[int, ...]
    sources: tuple[str, ...]  # who proposed each node: "root", a drafter, or "heads+lookup" when both did


def merge_drafts(root: int, root_prob: float, drafts: Sequence[Draft]) -> MergedTree:
    """Drafts under one root; a node whose (parent, token) exists already becomes that node."""
    tokens, parents, probs, ranks, sources = [root], [-1], [root_prob], [-1], ["root"]
    child: dict[tuple[int, int], int] = {}
    for draft in drafts:
        merged_id: list[int] = []
        for token, parent, prob, rank in zip(draft.tokens, draft.parents, draft.probs, draft.ranks):
            under = 0 if parent == ROOT else merged_id[parent]
            node = child.get((under, token))
            if node is None:
                node = len(tokens)
                child[(under, token)] = node
                tokens.append(token)
                parents.append(under)
                probs.append(prob)
                ranks.append(rank)
                sources.append(draft.source)
            elif draft.source not in sources[node].split("+"):
                sources[node] += "+" + draft.source
            merged_id.append(node)
    return MergedTree(tuple(tokens), tuple(parents), tuple(probs), tuple(ranks), tuple(sources))
