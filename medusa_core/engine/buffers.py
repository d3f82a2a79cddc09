"""The flat layout of a candidate tree: node order, parents, ancestor mask, leaf paths.

Node 0 is the root. The heads' tree follows in (depth, path) order; nodes that other drafters add
(a context-lookup chain, say) come after it. A layout depends only on the parent of each node, so
decoding builds one per distinct tree shape and reuses it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Iterable, Sequence

import torch

from medusa_core.spec.trees import Path_, TreeError, validate_tree

# Up to this many nodes the lm_head runs on every node: a few rows cost what one does, and an
# accepted leaf then needs no second projection.
ALL_LOGITS_MAX_NODES = 5


@dataclass(frozen=True)
class TreeBuffers:
    """Flat layout of a tree of N nodes. Tensors live on the decoding device; the tuples are
    host-side copies, so the loop reads structure without a device round trip."""

    paths: tuple[Path_, ...]  # the heads' tree
    parents: tuple[int, ...]  # [N] host, root -1
    depths: tuple[int, ...]  # [N] host, root 0
    ranks: tuple[
        int, ...
    ]  # [N] host: rank in its head's top-k (head = depth - 1); -1 for the root and other drafters' nodes
    internal_row: tuple[int, ...]  # [N] host: each node's row in `internal`, -1 for leaves
    num_head_nodes: int  # root plus the heads' nodes: the first nodes of the layout
    depth: torch.Tensor  # [N] long, root 0
    parent: torch.Tensor  # [N] long, root -1
    ancestor_mask: torch.Tensor  # [N, N] bool, [i, j] = j is i or an ancestor of i
    retrieve: torch.Tensor  # [leaves, max_depth + 1] node ids root->leaf, padded with -1
    internal: (
        torch.Tensor
    )  # [I] ids of the nodes whose logits a step computes: those with children (root first), or all
    parent_row: torch.Tensor  # [N] row of each node's parent in `internal` (root: 0, unused)

    @property
    def num_nodes(self) -> int:
        return len(self.parents)

    @property
    def lookup(self) -> int:
        """Nodes after the heads' tree: those other drafters added."""
        return self.num_nodes - self.num_head_nodes

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    @property
    def all_logits(self) -> bool:
        return len(self.internal_row) == int(self.internal.shape[0]) and min(self.internal_row) >= 0

    def to(self, device: torch.device | str) -> "TreeBuffers":
        return TreeBuffers(
            **{
                f.name: (
                    getattr(self, f.name).to(device)
                    if isinstance(getattr(self, f.name), torch.Tensor)
                    else getattr(self, f.name)
                )
                for f in fields(self)
            }
        )


def layout_from_parents(paths: Sequence[Path_], parents: Sequence[int], all_logits: bool | None = None) -> TreeBuffers:
    """The layout of the heads' tree `paths` (its nodes first, in order) plus any further nodes,
    given each node's parent (root first, -1; parents before children).

    Acceptance needs the logits of the nodes with children, and the next root those of the last
    accepted node; `all_logits` (default: for trees of at most ALL_LOGITS_MAX_NODES nodes)
    computes every node's at once."""
    n = len(parents)
    if n == 0 or parents[0] != -1 or any(not 0 <= p < i for i, p in enumerate(parents) if i):
        raise TreeError(f"parents {list(parents)} are not a tree with the root first and parents before children")
    depth = [0] * n
    for i in range(1, n):
        depth[i] = depth[parents[i]] + 1
    mask = torch.zeros(n, n, dtype=torch.bool)
    chains: list[list[int]] = []
    for i in range(n):
        chain = [i] if i == 0 else chains[parents[i]] + [i]
        chains.append(chain)
        mask[i, chain] = True
    has_child = set(parents[1:])
    if all_logits is None:
        all_logits = n <= ALL_LOGITS_MAX_NODES
    internal = list(range(n)) if all_logits else sorted(has_child | {0})
    row_of = {node: row for row, node in enumerate(internal)}
    leaves = [i for i in range(n) if i not in has_child]
    retrieve = torch.full((len(leaves), max(depth) + 1), -1, dtype=torch.long)
    for row, leaf in enumerate(leaves):
        retrieve[row, : len(chains[leaf])] = torch.tensor(chains[leaf])
    num_head_nodes = len(paths) + 1
    return TreeBuffers(
        paths=tuple(paths),
        parents=tuple(parents),
        depths=tuple(depth),
        ranks=(-1,) + tuple(p[-1] for p in paths) + (-1,) * (n - num_head_nodes),
        internal_row=tuple(row_of.get(i, -1) for i in range(n)),
        num_head_nodes=num_head_nodes,
        depth=torch.tensor(depth),
        parent=torch.tensor(list(parents)),
        ancestor_mask=mask,
        retrieve=retrieve,
        internal=torch.tensor(internal),
        parent_row=torch.tensor([0] + [row_of[p] for p in parents[1:]]),
    )


def heads_tree_parents(paths: Sequence[Sequence[int]]) -> list[int]:
    """Parents of the root and the (validated, ordered) heads' paths."""
    index = {(): 0} | {tuple(p): i + 1 for i, p in enumerate(paths)}
    return [-1] + [index[tuple(p[:-1])] for p in paths]


def build_tree_buffers(paths: Iterable[Sequence[int]], lookup: int = 0, all_logits: bool | None = False) -> TreeBuffers:
    """Layout of the heads' tree plus a chain of `lookup` context-lookup nodes under the root
    (all_logits None: decide by size, as decoding does)."""
    if lookup < 0:
        raise TreeError(f"a lookup chain needs length >= 0, got {lookup}")
    tree = validate_tree(paths)
    parents = heads_tree_parents(tree)
    first = len(parents)
    parents += [0] + list(range(first, first + lookup - 1)) if lookup else []
    return layout_from_parents(tree, parents, all_logits)
