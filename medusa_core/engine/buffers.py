"""The flat layout of a candidate tree: node order, parents, ancestor mask, leaf paths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from medusa_core.spec.trees import Path_, TreeError, validate_tree


@dataclass(frozen=True)
class TreeBuffers:
    """Flat layout of a tree of N nodes (node 0 = root, the paths in (depth, path) order, then any
    context-lookup chain)."""

    paths: tuple[Path_, ...]
    depth: torch.Tensor  # [N] long, root 0
    parent: torch.Tensor  # [N] long, root -1
    head: torch.Tensor  # [N] long, which head proposes the node (depth - 1), root -1
    rank: torch.Tensor  # [N] long, rank within that head's top-k, root -1
    ancestor_mask: torch.Tensor  # [N, N] bool, [i, j] = j is i or an ancestor of i
    retrieve: torch.Tensor  # [leaves, max_depth + 1] node ids root->leaf, padded with -1
    internal: torch.Tensor  # [I] ids of the nodes whose logits a step computes: those with children (root first), or all
    parent_row: torch.Tensor  # [N] row of each node's parent in `internal` (root: 0, unused)
    internal_row: tuple[int, ...]  # [N] each node's own row in `internal`, -1 for leaves (host-side)
    lookup: int = 0  # the last `lookup` nodes are a context-lookup chain under the root

    @property
    def num_head_nodes(self) -> int:
        """Root plus the heads' nodes: the first nodes of the layout."""
        return self.num_nodes - self.lookup

    @property
    def num_nodes(self) -> int:
        return int(self.depth.shape[0])

    @property
    def max_depth(self) -> int:
        return int(self.depth.max())

    def to(self, device: torch.device | str) -> "TreeBuffers":
        return TreeBuffers(
            self.paths,
            *(t.to(device) for t in (self.depth, self.parent, self.head, self.rank)),
            self.ancestor_mask.to(device),
            self.retrieve.to(device),
            self.internal.to(device),
            self.parent_row.to(device),
            self.internal_row,
            self.lookup,
        )


def build_tree_buffers(paths: Iterable[Sequence[int]], lookup: int = 0, all_logits: bool = False) -> TreeBuffers:
    """Flat layout of the heads' tree, plus a chain of `lookup` context-lookup nodes under the root.

    Acceptance needs the logits of the nodes with children, and the next root those of the last
    accepted node; `all_logits` computes every node's at once (worth it where a few rows cost
    what one does, so an accepted leaf needs no second pass)."""
    if lookup < 0:
        raise TreeError(f"a lookup chain needs length >= 0, got {lookup}")
    tree = validate_tree(paths)
    index = {(): 0} | {p: i + 1 for i, p in enumerate(tree)}
    first_lookup = len(tree) + 1
    n = first_lookup + lookup
    lookup_parents = [0] + list(range(first_lookup, n - 1)) if lookup else []
    parent = [-1] + [index[p[:-1]] for p in tree] + lookup_parents
    depth = [0] + [len(p) for p in tree] + list(range(1, lookup + 1))
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        j = i
        while j >= 0:
            mask[i, j] = True
            j = parent[j]
    has_child = set(parent[1:])
    internal = list(range(n)) if all_logits else sorted(has_child | {0})
    row_of = {node: row for row, node in enumerate(internal)}
    leaves = [i for i in range(n) if i not in has_child]
    width = max(depth) + 1
    retrieve = torch.full((len(leaves), width), -1, dtype=torch.long)
    for row, leaf in enumerate(leaves):
        chain = []
        j = leaf
        while j >= 0:
            chain.append(j)
            j = parent[j]
        retrieve[row, : len(chain)] = torch.tensor(chain[::-1])
    return TreeBuffers(
        paths=tree,
        depth=torch.tensor(depth),
        parent=torch.tensor(parent),
        head=torch.tensor([-1] + [len(p) - 1 for p in tree] + [-1] * lookup),
        rank=torch.tensor([-1] + [p[-1] for p in tree] + [-1] * lookup),
        ancestor_mask=mask,
        retrieve=retrieve,
        internal=torch.tensor(internal),
        parent_row=torch.tensor([0] + [row_of[p] for p in parent[1:]]),
        internal_row=tuple(row_of.get(i, -1) for i in range(n)),
        lookup=lookup,
    )
