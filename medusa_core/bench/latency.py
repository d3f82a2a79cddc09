"""A decoding step's forward work for a tree of a chosen size, for latency profiles of the hardware."""

from __future__ import annotations

from typing import Callable

import torch

from medusa_core.engine.buffers import build_tree_buffers
from medusa_core.engine.step import head_topk, propose_logits
from medusa_core.modeling.logits import final_logits
from medusa_core.modeling.device import synchronize
from medusa_core.modeling.models import BaseModel, MedusaModel, heads_spec_if_any, load_base_model, load_medusa
from medusa_core.engine.verify import prefill_rows, verify_rows
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
                head_topk(propose_logits(medusa, hidden[:, 0], buffers.max_depth), PROPOSAL_TOP_K, medusa.proposal)
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
    info = {
        "model": base.model_id,
        "heads": model.heads_name if isinstance(model, MedusaModel) else None,
        "device": str(base.device),
        "device_name": torch.cuda.get_device_name(base.device) if base.device.type == "cuda" else "cpu",
        "dtype": str(base.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "prefix_len": prefix_len,
        "batch_size": batch_size,
    }
    return tree_forward_fn(model, prefix_len, batch_size=batch_size), info
