"""A decoding step's forward work for a tree of a chosen size, for latency profiles of the hardware."""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from medusa_core.engine.buffers import build_tree_buffers
from medusa_core.engine.config import DecodeConfig
from medusa_core.engine.loop import trace_nodes
from medusa_core.engine.step import Decoding, Row, head_topk, propose_logits
from medusa_core.modeling.logits import final_logits
from medusa_core.modeling.device import synchronize
from medusa_core.modeling.models import BaseModel, MedusaModel, heads_spec_if_any, load_base_model, load_medusa
from medusa_core.engine.verify import commit_rows, prefill_rows, verify_rows
from medusa_core.spec.lookup import LookupConfig
from medusa_core.engine.buffers import TreeBuffers
from medusa_core.spec.trees import full_tree

PROPOSAL_TOP_K = 10  # the widest top-k the shipped trees use


def tree_of_size(n_tokens: int, branching: int = 4) -> list[tuple[int, ...]]:
    """The first n_tokens - 1 nodes of a breadth-first `branching`-ary tree (root implicit)."""
    depth = 1
    while len(full_tree(branching, depth)) < n_tokens - 1:
        depth += 1
    return list(full_tree(branching, depth)[: n_tokens - 1])


def tree_forward_fn(
    model: BaseModel | MedusaModel, prefix_len: int = 200, seed: int = 0, batch_size: int = 1
) -> Callable[[int], None]:
    """forward(n) runs one verification pass of an n-token tree over a prefix_len-token cache, for
    each of `batch_size` rows at once (as batched decoding runs them).

    Given a MedusaModel, a tree (n >= 2) also pays for the heads' proposal, as a decoding step
    does (the heads down to the tree's depth only), so the profile compares trees with plain
    decoding (n = 1) fairly.
    """
    medusa = model if isinstance(model, MedusaModel) else None
    base = medusa.base if medusa else model
    gen = torch.Generator().manual_seed(seed)
    vocab = base.vocab_size
    prefix = torch.randint(0, vocab, (batch_size, prefix_len), generator=gen).tolist()
    with torch.inference_mode():
        cache, _ = prefill_rows(base.model, prefix)
    buffers_by_size: dict[int, TreeBuffers] = {}

    def forward(n_tokens: int) -> None:
        if n_tokens not in buffers_by_size:
            buffers_by_size[n_tokens] = build_tree_buffers(tree_of_size(n_tokens), all_logits=None).to(base.device)
        buffers = buffers_by_size[n_tokens]
        tokens = torch.randint(0, vocab, (batch_size, n_tokens), generator=gen).to(base.device)
        rows = batch_size
        with torch.inference_mode():
            hidden = verify_rows(
                base.model, cache, tokens, buffers.depth.expand(rows, -1), buffers.ancestor_mask.expand(rows, -1, -1),
                [prefix_len] * rows,
            )  # [B, n, d]
            final_logits(base.model, hidden[:, buffers.internal])  # as decoding does
            if medusa is not None and n_tokens > 1:
                logits = propose_logits(medusa, hidden[:, 0], buffers.max_depth, tokens[:, 0])
                head_topk(logits, PROPOSAL_TOP_K, medusa.proposal)
            cache.crop(prefix_len - cache.get_seq_length())
        synchronize(base.device)

    return forward


def make_tree_forward(
    model_spec: str | None, device: str = "auto", dtype: str = "auto", prefix_len: int = 200, batch_size: int = 1
) -> tuple[Callable[[int], None], dict]:
    """The profile's forward for a model, with its heads when it has some (given by $MEDUSA_HEADS,
    or the shipped heads of the default model), over `batch_size` rows a pass."""
    heads = heads_spec_if_any(None, model_spec)
    model = load_medusa(model_spec, heads, device, dtype) if heads else load_base_model(model_spec, device, dtype)
    base = model.base if isinstance(model, MedusaModel) else model
    heads_name = model.heads_name if isinstance(model, MedusaModel) else None
    info = profile_info(base, heads_name, prefix_len, batch_size)
    return tree_forward_fn(model, prefix_len, batch_size=batch_size), info


def profile_info(base: BaseModel, heads: str | None, prefix_len: int, batch_size: int) -> dict:
    """What a profile records about where it was timed."""
    return {
        "model": base.model_id,
        "heads": heads,
        "device": str(base.device),
        "device_name": torch.cuda.get_device_name(base.device) if base.device.type == "cuda" else "cpu",
        "dtype": str(base.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "prefix_len": prefix_len,
        "batch_size": batch_size,
    }


def planted_prefix(vocab: int, prefix_len: int, gen: torch.Generator) -> tuple[list[int], int]:
    """Random tokens whose last two, with the returned root, repeat the first three: a context
    lookup then finds a long chain at every step, so a profile can time chains of any length."""
    body = torch.randint(0, vocab, (max(prefix_len - 2, 24),), generator=gen).tolist()
    return body + body[:2], body[2]


def decoder_step_fn(medusa: MedusaModel, prefix_len: int = 200, seed: int = 0, batch_size: int = 1) -> Callable:
    """step(shape) runs one decoder step as `generate` runs it (draft, verify, accept, read the
    next roots, commit, trace) for `batch_size` rows over a prefix_len-token cache, with the
    shape's tree and a lookup chain of `shape.chain` tokens, then puts the cache back. For a
    `shape.leaf` step, node (0,) carries the model's own next token, so the step accepts it."""
    from optimizer.step_cost import StepShape  # the shapes' owner; torch-free

    base = medusa.base
    gen = torch.Generator().manual_seed(seed)
    prefixes = [planted_prefix(base.vocab_size, prefix_len, gen) for _ in range(batch_size)]
    with torch.inference_mode():
        cache, hidden = prefill_rows(base.model, [ids for ids, _ in prefixes])  # [B, d]
        root_logits = final_logits(base.model, hidden)  # [B, V]
        _, after_root = prefill_rows(base.model, [ids + [root] for ids, root in prefixes])  # [B, d]
        next_tokens = final_logits(base.model, after_root).argmax(dim=-1).tolist()  # the model's token after each root
    length = len(prefixes[0][0])
    prepared: dict[StepShape, tuple[Decoding, list[Row]]] = {}

    def prepare(shape: StepShape) -> tuple[Decoding, list[Row]]:
        lookup = LookupConfig(shape.chain, 3, 3) if shape.chain else None
        decoding = Decoding(medusa, shape.tree, DecodeConfig(trace_text=False, lookup=lookup))
        rows = [Row(b, "", ids, 0, torch.Generator()) for b, (ids, _) in enumerate(prefixes)]
        states = decoding.read_next(rows, hidden, root_logits, [length] * batch_size)
        for row, state, (_, root), after in zip(rows, states, prefixes, next_tokens):
            heads = [list(t) for t in state.head_tokens]
            if shape.leaf:
                heads[0][0] = after
            row.state = dataclasses.replace(state, root=root, head_tokens=heads)
        return decoding, rows

    def step(shape: StepShape) -> None:
        if shape not in prepared:
            with torch.inference_mode():
                prepared[shape] = prepare(shape)
        decoding, rows = prepared[shape]
        with torch.inference_mode():
            result = decoding.step(cache, rows)
            commit_rows(cache, [length] * len(rows), result.accepted)
            for b in range(len(rows)):
                trace_nodes(medusa, result.trees[b], result.layouts[b], False)
            cache.crop(length - cache.get_seq_length())
        synchronize(base.device)

    return step


def make_decoder_step(
    model_spec: str | None, device: str = "auto", dtype: str = "auto", prefix_len: int = 200, batch_size: int = 1
) -> tuple[Callable, dict]:
    """The profile's decoder step for a model and its heads ($MEDUSA_HEADS, or the default model's
    shipped heads); info also says the heads' count and the widest top-k they propose."""
    heads = heads_spec_if_any(None, model_spec)
    if not heads:
        raise ValueError("a decoder-step profile needs heads: set $MEDUSA_HEADS or use a model with shipped heads")
    medusa = load_medusa(model_spec, heads, device, dtype)
    info = profile_info(medusa.base, medusa.heads_name, prefix_len, batch_size) | {
        "num_heads": medusa.num_heads,
        "top_k": min(PROPOSAL_TOP_K, medusa.proposal.size if medusa.proposal else PROPOSAL_TOP_K),
        "timed": "decoder step",
    }
    return decoder_step_fn(medusa, prefix_len, batch_size=batch_size), info
