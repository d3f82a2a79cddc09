"""One decoding step for a batch of rows: draft, verify in one pass, accept, read the next roots.

Host and device meet twice a step, each time for one small packed transfer for the whole batch:
the accepted paths (to commit the cache and pick where each next root is read), then the next
roots with the heads' top-k (what the next step drafts from). Everything else a step needs on the
host (the trees' shapes, their tokens, the traces) is host-side already. A batch of one runs the
same code; its tree needs no padding and its cache no per-row masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from transformers import DynamicCache

from medusa_core.engine.acceptance import accept_greedy, accept_typical, sample_typical
from medusa_core.engine.buffers import TreeBuffers, layout_from_parents
from medusa_core.engine.config import DecodeConfig
from medusa_core.engine.drafters import DraftContext, MergedTree, drafters_for, merge_drafts
from medusa_core.engine.records import StepRecord
from medusa_core.engine.sampling import accept_exact, draw, processed_probs
from medusa_core.engine.verify import verify_rows
from medusa_core.modeling.logits import final_logits
from medusa_core.modeling.models import MedusaModel
from medusa_core.modeling.proposal_vocab import ProposalVocab
from medusa_core.spec.trees import Path_, tree_depth, tree_top_k, validate_tree


def to_host(*tensors: torch.Tensor) -> list[list[float]]:
    """One device-to-host transfer for several small tensors: each flattened, as floats (token ids
    below 2**53 are exact)."""
    flat = [t.reshape(-1).to(torch.float64) for t in tensors]
    values = torch.cat(flat).tolist()
    out, at = [], 0
    for t in flat:
        out.append(values[at : at + t.numel()])
        at += t.numel()
    return out


def head_topk(
    head_logits: torch.Tensor, top_k: int, proposal: ProposalVocab | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """[K, ..., U] -> top-k token ids [K, ..., k] and their probabilities [K, ..., k]."""
    probs = torch.softmax(head_logits.float(), dim=-1)
    top = torch.topk(probs, top_k, dim=-1)
    tokens = top.indices if proposal is None else proposal.tokens[top.indices]
    return tokens, top.values


def root_embeddings(medusa: MedusaModel, roots: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """The pending roots' input embeddings [..., d] for heads that read them (else None)."""
    if not medusa.heads.config.root_token:
        return None
    if roots is None:
        raise ValueError("these heads read the pending root token: pass the roots")
    return medusa.base.model.get_input_embeddings()(roots).to(dtype)


def heads_logits(
    medusa: MedusaModel, hidden: torch.Tensor, num_heads: int | None = None, roots: torch.Tensor | None = None
) -> torch.Tensor:
    """The first `num_heads` (default all) heads' logits [K, ..., U] over their proposal
    vocabulary (U = V without one); roots [...] are the pending root tokens at `hidden`
    (each position's next token), needed only by heads that read them."""
    root_embeds = root_embeddings(medusa, roots, hidden.dtype)
    if medusa.proposal is None or medusa.proposal.projection is None:
        return medusa.heads(hidden, medusa.base.model.get_output_embeddings(), num_heads, root_embeds)
    return medusa.proposal.logits(medusa.heads.head_states(hidden, num_heads, root_embeds))


def propose_logits(
    medusa: MedusaModel, hidden: torch.Tensor, depth: int, roots: torch.Tensor | None = None
) -> torch.Tensor:
    """Logits [D, ..., U] of the heads a tree of this depth uses: a shallow tree skips the deep
    heads' projections, a visible share of a CPU step; none for the empty tree (plain greedy)."""
    if depth == 0:
        return hidden.new_empty(0, 0)
    return heads_logits(medusa, hidden, depth, roots)


def next_root(
    logits: torch.Tensor, config: DecodeConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The base model's own next token at the last accepted node and its probability (device)."""
    if config.sampling is not None:
        probs = processed_probs(logits, config.sampling)  # [V]
        token = draw(probs[None], generator)[0].to(logits.device)
        return token, probs[token]
    probs = torch.softmax(logits.float(), dim=-1)  # [V]
    if config.typical is None:
        token = logits.argmax()
    else:
        token = torch.tensor(sample_typical(logits, config.typical, generator), device=logits.device)
    return token, probs[token]


@dataclass(frozen=True)
class RowState:
    """Where a row stands (host-side): its cache length, the pending root and the heads' top-k there."""

    prefix_len: int
    root: int
    root_prob: float
    head_tokens: list[list[int]]  # [D][k]
    head_probs: list[list[float]]  # [D][k]


@dataclass
class Row:
    """One prompt's progress through a (batched) generation; host-side, owned by the loop."""

    index: int  # its place in the input
    prompt: str
    ids: list[int]
    seed: int
    generator: torch.Generator
    state: RowState | None = None
    out: list[int] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    stop: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class StepResult:
    """A verified step for the batch, host-side."""

    trees: list[MergedTree]
    layouts: list[TreeBuffers]
    accepted: list[list[int]]  # per row: node ids root -> last accepted node
    drawn: list[list[int] | None]  # per row: exact sampling's draws
    next_states: list[RowState]


class Layouts:
    """Tree layouts by shape, built once per distinct shape on the decoding device, and their
    depth and ancestor mask padded to a batch's widest tree."""

    def __init__(self, paths: tuple[Path_, ...], device: torch.device) -> None:
        self.paths, self.device = paths, device
        self.by_parents: dict[tuple[int, ...], TreeBuffers] = {}
        self.by_width: dict[tuple[tuple[int, ...], int], tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, parents: tuple[int, ...]) -> TreeBuffers:
        if parents not in self.by_parents:
            self.by_parents[parents] = layout_from_parents(self.paths, parents).to(self.device)
        return self.by_parents[parents]

    def padded(self, parents: tuple[int, ...], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Depth [W] and ancestor mask [W, W]; a padding node sits at depth 0 and sees only itself
        (and its row's cache), so it changes no real node and no row of the mask is empty."""
        layout = self(parents)
        if width == layout.num_nodes:
            return layout.depth, layout.ancestor_mask
        key = (parents, width)
        if key not in self.by_width:
            n = layout.num_nodes
            depth = torch.zeros(width, dtype=torch.long, device=self.device)
            depth[:n] = layout.depth
            ancestors = torch.eye(width, dtype=torch.bool, device=self.device)
            ancestors[:n, :n] = layout.ancestor_mask
            self.by_width[key] = (depth, ancestors)
        return self.by_width[key]


class Decoding:
    """What one generation fixes before its first step (tree, drafters, layouts), and its step."""

    def __init__(self, medusa: MedusaModel, tree: Sequence[Sequence[int]] | None, config: DecodeConfig) -> None:
        self.medusa, self.config = medusa, config
        self.paths = validate_tree(medusa.default_tree if tree is None else tree, medusa.num_heads)
        self.drafters = drafters_for(self.paths, config.lookup)
        self.heads_depth, self.top_k = tree_depth(self.paths), tree_top_k(self.paths)
        self.max_depth = max(self.heads_depth, config.lookup.tokens if config.lookup else 0)
        self.layouts = Layouts(self.paths, medusa.base.device)
        if medusa.proposal is not None and self.top_k > medusa.proposal.size:
            raise ValueError(
                f"the tree needs each head's top {self.top_k} but the heads propose from only "
                f"{medusa.proposal.size} tokens"
            )

    def read_next(
        self,
        rows: Sequence[Row],
        hidden_last: torch.Tensor,  # [B, d] at each row's last accepted position
        root_logits: torch.Tensor | None,  # [B, V]; None when the exact walk drew the roots
        lengths: Sequence[int],
        drawn: Sequence[tuple[int, float]] | None = None,
    ) -> list[RowState]:
        """Every row's next root and the heads' top-k there: one transfer for the whole batch."""
        roots, root_probs = self.next_roots(rows, root_logits, drawn)
        depth, k = self.heads_depth, self.top_k
        if depth:
            logits = propose_logits(self.medusa, hidden_last, depth, roots)
            tokens, probs = head_topk(logits, k, self.medusa.proposal)
            tokens, probs = tokens.transpose(0, 1), probs.transpose(0, 1)  # [B, D, k]
        else:
            tokens = probs = root_probs.new_empty(0)
        roots_h, root_probs_h, tokens_h, probs_h = to_host(roots, root_probs, tokens, probs)
        size = depth * k
        states = []
        for b, length in enumerate(lengths):
            row_tokens, row_probs = tokens_h[b * size : (b + 1) * size], probs_h[b * size : (b + 1) * size]
            states.append(
                RowState(
                    length,
                    int(roots_h[b]),
                    root_probs_h[b],
                    [[int(t) for t in row_tokens[i : i + k]] for i in range(0, size, k)],
                    [row_probs[i : i + k] for i in range(0, size, k)],
                )
            )
        return states

    def next_roots(
        self, rows: Sequence[Row], root_logits: torch.Tensor | None, drawn: Sequence[tuple[int, float]] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's next root and its probability [B] (device)."""
        device = self.medusa.base.device
        if drawn is not None:
            tokens, probs = zip(*drawn)
            return torch.tensor(tokens, device=device), torch.tensor(probs, device=device)
        if self.config.mode == "greedy":
            tokens = root_logits.argmax(dim=-1)  # [B]
            probs = torch.softmax(root_logits.float(), dim=-1)  # [B, V]
            return tokens, probs.gather(1, tokens[:, None])[:, 0]
        picks = [next_root(root_logits[b], self.config, row.generator) for b, row in enumerate(rows)]
        return torch.stack([t for t, _ in picks]), torch.stack([p for _, p in picks])

    def draft(self, row: Row) -> MergedTree:
        state = row.state
        # While a row decodes, every accepted token is emitted: its cache holds the prompt and the output.
        ctx = DraftContext(row.ids + row.out + [state.root], state.head_tokens, state.head_probs)
        return merge_drafts(state.root, state.root_prob, [d.draft(ctx) for d in self.drafters])

    def step(self, cache: DynamicCache, rows: Sequence[Row]) -> StepResult:
        """Draft every row's tree, verify them all in one pass, accept and read the next roots."""
        trees = [self.draft(row) for row in rows]
        layouts = [self.layouts(t.parents) for t in trees]
        width = max(len(t.tokens) for t in trees)
        device = self.medusa.base.device
        padding = [[t.tokens[0]] * (width - len(t.tokens)) for t in trees]
        node_tokens = torch.tensor(
            [list(t.tokens) + pad for t, pad in zip(trees, padding)], device=device
        )  # [B, W]
        padded = [self.layouts.padded(t.parents, width) for t in trees]
        depth = torch.stack([d for d, _ in padded])  # [B, W]
        ancestors = torch.stack([a for _, a in padded])  # [B, W, W]
        lengths = [row.state.prefix_len for row in rows]
        hidden = verify_rows(self.medusa.base.model, cache, node_tokens, depth, ancestors, lengths)  # [B, W, d]
        # Big trees' leaves are rarely needed: project only the nodes with children.
        internal_hidden = torch.cat([hidden[b, lay.internal] for b, lay in enumerate(layouts)])  # [sum I_b, d]
        internal = final_logits(self.medusa.base.model, internal_hidden)
        per_row = list(internal.split([int(lay.internal.shape[0]) for lay in layouts]))  # [I_b, V] each
        if self.config.sampling is not None:
            return self.accept_exact(hidden, trees, layouts, per_row, rows)
        typical = self.config.typical
        found = [
            accept_greedy(node_tokens[b, : len(t.tokens)], per_row[b], lay) if typical is None
            else accept_typical(node_tokens[b, : len(t.tokens)], per_row[b], lay, typical)
            for b, (t, lay) in enumerate(zip(trees, layouts))
        ]
        host = to_host(*[x for path_length in found for x in path_length])
        accepted = [[int(i) for i in host[2 * b][: int(host[2 * b + 1][0])]] for b in range(len(rows))]
        root_logits = self.root_logits(hidden, per_row, layouts, accepted)
        new_lengths = [n + len(a) for n, a in zip(lengths, accepted)]
        states = self.read_next(rows, last_hidden(hidden, accepted), root_logits, new_lengths)
        return StepResult(trees, layouts, accepted, [None] * len(rows), states)

    def accept_exact(
        self, hidden: torch.Tensor, trees: list[MergedTree], layouts: list[TreeBuffers], per_row: list[torch.Tensor],
        rows: Sequence[Row],
    ) -> StepResult:
        """Exact sampling: each row's walk draws from its own generator; leaves it reaches are
        projected when reached."""
        model = self.medusa.base.model
        walks = [
            accept_exact(tree.tokens, lay, logits, lambda n, b=b: final_logits(model, hidden[b, n]),
                         self.config.sampling, row.generator)
            for b, (tree, lay, logits, row) in enumerate(zip(trees, layouts, per_row, rows))
        ]
        accepted = [w.accepted for w in walks]
        new_lengths = [row.state.prefix_len + len(a) for row, a in zip(rows, accepted)]
        drawn = [(w.next_token, w.next_prob) for w in walks]
        states = self.read_next(rows, last_hidden(hidden, accepted), None, new_lengths, drawn)
        return StepResult(trees, layouts, accepted, [w.drawn for w in walks], states)

    def root_logits(
        self, hidden: torch.Tensor, per_row: list[torch.Tensor], layouts: list[TreeBuffers], accepted: list[list[int]]
    ) -> torch.Tensor:
        """[B, V] logits at each row's last accepted node: a row of the step's internal logits, or
        one projection for all the rows whose path ended in a leaf."""
        leaves = [b for b, (lay, a) in enumerate(zip(layouts, accepted)) if lay.internal_row[a[-1]] < 0]
        leaf_logits = {}
        if leaves:
            projected = final_logits(self.medusa.base.model, hidden[leaves, [accepted[b][-1] for b in leaves]])
            leaf_logits = dict(zip(leaves, projected))
        rows = [
            per_row[b][lay.internal_row[a[-1]]] if b not in leaf_logits else leaf_logits[b]
            for b, (lay, a) in enumerate(zip(layouts, accepted))
        ]
        return torch.stack(rows)


def last_hidden(hidden: torch.Tensor, accepted: Sequence[Sequence[int]]) -> torch.Tensor:
    """[B, d] hidden state at each row's last accepted node."""
    return hidden[list(range(len(accepted))), [a[-1] for a in accepted]]
