"""The latency profile's forward: any tree size, with or without the heads' proposal."""

import pytest
import torch

from medusa_core.bench.latency import tree_forward_fn, tree_of_size
from medusa_core.spec.trees import validate_tree
from tiny_models import VOCAB, medusa_of, random_heads, tiny_base


@pytest.mark.parametrize("n", [1, 2, 5, 6, 22])
def test_tree_of_size_has_n_tokens(n):
    tree = tree_of_size(n)
    assert len(tree) == n - 1 and validate_tree(tree) == tuple(sorted(tree, key=lambda p: (len(p), p)))


def test_forward_runs_every_size_and_pays_for_the_proposal(monkeypatch):
    base = tiny_base("llama")
    medusa = medusa_of(base, random_heads(4, shared=True), list(range(40)))
    calls = []
    real = torch.topk
    monkeypatch.setattr(torch, "topk", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    for model in (base, medusa):
        forward = tree_forward_fn(model, prefix_len=12)
        for n in (1, 2, 7):
            forward(n)
    # the heads' proposal, for the two trees of the Medusa model only, down to each tree's depth
    # (2 tokens: one node, depth 1; 7 tokens: 4 nodes under the root and 2 below, depth 2)
    assert calls == [(1, 1, 40), (2, 1, 40)]


def test_a_batched_forward_verifies_every_row_and_restores_the_cache(monkeypatch):
    medusa = medusa_of(tiny_base("qwen2"), random_heads(4), list(range(40)))
    shapes = []
    real = torch.topk
    monkeypatch.setattr(torch, "topk", lambda *a, **k: shapes.append(a[0].shape) or real(*a, **k))
    forward = tree_forward_fn(medusa, prefix_len=9, batch_size=3)
    for n in (1, 7, 7):
        forward(n)
    assert shapes == [(2, 3, 40)] * 2  # both 7-token passes: depth-2 heads over the 3 rows


def test_a_decoder_step_runs_every_profile_shape_batched_or_not():
    from medusa_core.bench.latency import decoder_step_fn, planted_prefix
    from medusa_core.spec.lookup import LookupConfig, find_continuation
    from optimizer.step_cost import StepShape, profile_shapes

    ids, root = planted_prefix(VOCAB, 30, torch.Generator().manual_seed(0))
    assert len(find_continuation(ids + [root], LookupConfig(16, 3, 3))) == 16  # a long chain at every step
    medusa = medusa_of(tiny_base("qwen2"), random_heads(3), list(range(40)))
    for batch in (1, 2):
        step = decoder_step_fn(medusa, prefix_len=30, batch_size=batch)
        for shape in profile_shapes((1, 2, 6, 12), 3, 4) + [StepShape(((0,), (1,)), 8)]:
            step(shape)
            step(shape)


def test_a_leaf_shape_accepts_its_leaf(monkeypatch):
    from medusa_core.bench import latency
    from optimizer.step_cost import StepShape

    accepted = []
    real = latency.commit_rows
    monkeypatch.setattr(latency, "commit_rows", lambda cache, lengths, paths: accepted.append(paths) or real(
        cache, lengths, paths))
    medusa = medusa_of(tiny_base("llama"), random_heads(2), list(range(40)))
    step = latency.decoder_step_fn(medusa, prefix_len=30)
    step(StepShape(((0,), (1,)), leaf=True))
    step(StepShape(((0,), (1,))))
    assert len(accepted[0][0]) == 2 and len(accepted[1][0]) == 1  # root + node (0,), then the root alone
