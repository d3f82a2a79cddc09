"""Distillation data and the training loss: captured hidden states, the vocabulary cut."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from medusa_core.modeling.heads import HeadsConfig, MedusaHeads
from medusa_core.modeling.heads_io import save_heads

from medusa_core.training.distill_data import (
    IGNORE, Conversation, HiddenCache, build_hidden_cache, generate_responses, hidden_cache_of, hidden_states_for,
    length_batches,
)
from medusa_core.training.training import evaluate_heads, remap_targets, training_lm_head
from medusa_core.training.distill_chunks import FORMAT, DistillConfig, distill, load_distilled, write_chunk
from medusa_core.training.losses import hard_loss, head_weights, soft_loss, teacher_logits
from medusa_core.training.training_data import concat_hidden_caches, distilled_hidden_cache, training_vocabulary
from medusa_core.training.warm_start import earlier_vocabulary, grown_from, initial_heads
from tiny_models import HIDDEN, VOCAB, random_heads, tiny_base


def test_vocabulary_is_every_token_the_conversations_use():
    tokens = [torch.tensor([5, 3, 9]), torch.tensor([9, 1])]
    cache = HiddenCache(torch.zeros(3, HIDDEN), tokens, torch.tensor([0, 0]), torch.tensor([0, 2, 3]))
    assert training_vocabulary(cache, VOCAB, None).tolist() == [1, 3, 5, 9]


def test_cut_lm_head_gives_the_full_heads_logits_of_the_kept_tokens():
    base = tiny_base("llama")
    vocab = torch.tensor([2, 7, 40, VOCAB - 1])
    hidden = torch.randn(6, HIDDEN)
    full = training_lm_head(base, None)
    cut = training_lm_head(base, vocab)
    assert full.out_features == VOCAB and cut.out_features == 4
    assert not cut.weight.requires_grad
    torch.testing.assert_close(cut(hidden), full(hidden)[:, vocab])
    torch.testing.assert_close(full(hidden), base.model.get_output_embeddings()(hidden))


def test_targets_map_to_positions_in_the_vocabulary():
    vocab = torch.tensor([2, 7, 40])
    targets = torch.tensor([[7, IGNORE], [40, 2]])
    assert remap_targets(targets, vocab, VOCAB).tolist() == [[1, IGNORE], [2, 0]]
    assert remap_targets(targets, None, VOCAB) is targets


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_hidden_states_kept_from_generation_equal_a_fresh_forward(arch):
    """Batched, left-padded generation: its captured states match one clean pass per conversation."""
    base = tiny_base(arch)
    prompts = [[5, 6, 7], [9], [3, 4, 5, 6, 7, 8], [11, 12]]
    conversations, hidden = generate_responses(base, prompts, max_new_tokens=7, batch_size=3)
    assert [c.prompt_ids for c in conversations] == prompts
    for conv, h in zip(conversations, hidden):
        assert len(conv.response_ids) == 7 and h.dtype == torch.float16
        torch.testing.assert_close(h, hidden_states_for(base, conv), rtol=2e-3, atol=2e-3)
    cache = hidden_cache_of(conversations, hidden)
    assert cache.offsets.tolist() == [0, 7, 14, 21, 28] and cache.starts.tolist() == [2, 0, 5, 1]
    with pytest.raises(ValueError, match="hidden states for a response"):
        hidden_cache_of(conversations[:1], [hidden[0][:3]])


def test_hard_loss_is_a_weighted_mean_of_per_head_cross_entropies():
    logits = torch.randn(3, 5, 11)  # [K, B, V]
    targets = torch.randint(0, 11, (5, 3))
    targets[0, 2] = targets[4, 2] = IGNORE
    per_head = torch.stack([
        F.cross_entropy(logits[k], targets[:, k], ignore_index=IGNORE) for k in range(3)
    ])
    w = head_weights(3, 0.8)
    assert w.tolist() == pytest.approx([1.0, 0.8, 0.64])
    torch.testing.assert_close(hard_loss(logits, targets, w), (per_head * w).sum() / w.sum())
    torch.testing.assert_close(hard_loss(logits, targets, head_weights(3, 1.0)), per_head.mean())


def test_soft_loss_is_the_kl_to_the_teacher_and_vanishes_at_it():
    teacher = torch.randn(2, 4, 9)
    targets = torch.zeros(4, 2, dtype=torch.long)
    targets[3, 1] = IGNORE
    w = head_weights(2, 1.0)
    assert soft_loss(teacher.clone(), teacher, targets, w).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(2, 4, 9, requires_grad=True)
    p = teacher.softmax(-1)
    kl = (p * (p.log() - logits.log_softmax(-1))).sum(-1)  # [K, B]
    expected = (kl[0].mean() + kl[1, :3].mean()) / 2
    loss = soft_loss(logits, teacher, targets, w)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_teacher_rows_hold_the_base_distribution_of_each_heads_target(arch):
    """On the model's own greedy answer, the teacher's argmax is every head's hard target."""
    base = tiny_base(arch)
    conversations, hidden = generate_responses(base, [[5, 6, 7], [9, 4]], max_new_tokens=9, batch_size=2)
    cache = hidden_cache_of(conversations, hidden)
    rows, targets = cache.targets(3, [0, 1])  # [R], [R, K]
    lm_head = training_lm_head(base, None)
    teacher = teacher_logits(cache.hidden, lm_head, rows, 3)  # [K, R, V]
    valid = targets.T != IGNORE
    assert valid.sum() > 0
    assert torch.equal(teacher.argmax(-1)[valid], targets.T[valid])


def test_proposal_vocabulary_keeps_the_most_frequent_answer_tokens():
    tokens = [torch.tensor([50, 5, 3, 3, 9]), torch.tensor([51, 3, 9, 7])]  # prompt = first token
    cache = HiddenCache(torch.zeros(6, HIDDEN), tokens, torch.tensor([0, 0]), torch.tensor([0, 4, 6]))
    assert training_vocabulary(cache, VOCAB, 2).tolist() == [3, 9]  # 3 thrice, 9 twice; prompts not counted
    assert training_vocabulary(cache, VOCAB, 100).tolist() == [3, 5, 7, 9]
    assert training_vocabulary(cache, VOCAB, None).tolist() == [3, 5, 7, 9, 50, 51]


def test_concatenated_caches_give_each_parts_rows_and_targets():
    base = tiny_base("llama")
    conversations, hidden = generate_responses(base, [[5, 6], [9], [3, 4, 8]], max_new_tokens=5, batch_size=3)
    parts = [hidden_cache_of(conversations[:2], hidden[:2]), hidden_cache_of(conversations[2:], hidden[2:])]
    whole = concat_hidden_caches(parts)
    direct = hidden_cache_of(conversations, hidden)
    for a, b in ((whole.hidden, direct.hidden), (whole.starts, direct.starts), (whole.offsets, direct.offsets)):
        assert torch.equal(a, b)
    assert torch.equal(whole.targets(2, [0, 1, 2])[1], direct.targets(2, [0, 1, 2])[1])


def test_distilled_hidden_states_are_cached_per_chunk(tmp_path, monkeypatch):
    """Adding a chunk recomputes only that chunk's hidden states."""
    monkeypatch.setenv("MEDUSA_CACHE", str(tmp_path / "cache"))
    base = tiny_base("llama")
    header = {"format": FORMAT, "model": "tiny", "prompts_sha": "x", "max_new_tokens": 4}
    conversations, _ = generate_responses(base, [[5, 6], [9], [3, 4, 8]], max_new_tokens=4, batch_size=3)
    folder = tmp_path / "chunks"
    folder.mkdir()
    write_chunk(folder / "chunk-00000.json.xz", header, conversations[:2], 0)
    stages: list[str] = []
    first = distilled_hidden_cache(base, [str(folder)], lambda s, d, t: stages.append(s))
    assert first.offsets.tolist() == [0, 4, 8] and stages[-1] == "hidden states, chunk 1/1"
    write_chunk(folder / "chunk-00001.json.xz", header, conversations[2:], 2)
    stages.clear()
    both = distilled_hidden_cache(base, [str(folder)], lambda s, d, t: stages.append(s))
    assert set(stages) == {"hidden states, chunk 2/2"}
    assert torch.equal(both.hidden[:8], first.hidden) and both.offsets.tolist() == [0, 4, 8, 12]
    assert distilled_hidden_cache(base, [str(folder)]).hidden.shape == both.hidden.shape


def three_prompt_distill(tmp_path, monkeypatch):
    """A tiny model, a file of three prompts and an empty chunk folder, with a private cache."""
    monkeypatch.setenv("MEDUSA_CACHE", str(tmp_path / "cache"))
    prompts = tmp_path / "p.txt"
    prompts.write_text("5 6\n9\n3 4 8\n")
    return tiny_base("llama"), prompts, tmp_path / "chunks"


def test_distill_keeps_the_hidden_states_it_generated(tmp_path, monkeypatch):
    """Chunks written by `distill` come with their hidden states: training computes none again."""
    base, prompts, out = three_prompt_distill(tmp_path, monkeypatch)
    distill(base, DistillConfig(str(prompts), str(out), chunk_size=2, batch_size=2, max_new_tokens=5))
    stages: list[str] = []
    cache = distilled_hidden_cache(base, [str(out)], lambda s, d, t: stages.append(s))
    assert stages == [] and len(cache.tokens) == 3
    fresh = build_hidden_cache(base, load_distilled([out]))
    torch.testing.assert_close(cache.hidden, fresh.hidden, rtol=2e-3, atol=2e-3)
    assert torch.equal(cache.offsets, fresh.offsets) and torch.equal(cache.starts, fresh.starts)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_batched_recompute_equals_one_forward_pass_per_conversation(arch):
    """Right padding inside a batch leaves every conversation's states as a pass of its own gives."""
    base = tiny_base(arch)
    g = torch.Generator().manual_seed(1)
    conversations = [
        Conversation(*(torch.randint(1, VOCAB, (n,), generator=g).tolist() for n in lengths))
        for lengths in [(3, 9), (7, 2), (1, 14), (5, 5), (2, 1)]
    ]
    stages: list[tuple[int, int]] = []
    cache = build_hidden_cache(base, conversations, lambda d, t: stages.append((d, t)), batch_tokens=24)
    assert len(stages) > 1 and stages[-1] == (5, 5)  # several batches, progress up to all conversations
    one_by_one = hidden_cache_of(conversations, [hidden_states_for(base, c) for c in conversations])
    assert torch.equal(cache.offsets, one_by_one.offsets)
    torch.testing.assert_close(cache.hidden, one_by_one.hidden, rtol=2e-3, atol=2e-3)


@given(st.lists(st.integers(1, 50), max_size=30), st.integers(1, 120))
def test_length_batches_partition_within_the_token_budget(lengths, budget):
    groups = length_batches(lengths, budget)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        assert len(g) == 1 or max(lengths[i] for i in g) * len(g) <= budget


def test_distill_progress_tells_found_chunks_from_generated_ones(tmp_path, monkeypatch):
    """The CLI's rate and ETA count only generated chunks, so the report says which were found."""
    base, prompts, out = three_prompt_distill(tmp_path, monkeypatch)
    first: list[tuple] = []
    distill(base, DistillConfig(str(prompts), str(out), 2, 2, 5, target_tokens=1), lambda *a: first.append(a))
    assert first == [(2, 3, 10, True)]
    again: list[tuple] = []
    tokens = distill(base, DistillConfig(str(prompts), str(out), 2, 2, 5), lambda *a: again.append(a))
    assert [a[3] for a in again] == [False, True] and again[-1][:2] == (3, 3) and tokens == again[-1][2]


def test_fresh_own_projections_start_as_the_lm_heads_rows():
    base = tiny_base("llama")
    vocab = torch.tensor([2, 7, 40, 41, VOCAB - 1])
    lm_head = training_lm_head(base, vocab)
    heads = initial_heads(base, HeadsConfig(3, 2, HIDDEN, VOCAB, False, "", proposal_size=5), lm_head, None)
    hidden = torch.randn(4, HIDDEN)
    torch.testing.assert_close(heads(hidden), lm_head(hidden).expand(3, 4, 5))


def test_grown_heads_start_exactly_where_the_earlier_heads_were(tmp_path):
    """More ResBlocks and an own projection added to shared heads change no logit at the start."""
    base = tiny_base("llama")
    earlier = random_heads(3, seed=4, shared=True)
    save_heads(earlier, tmp_path / "h", proposal_tokens=torch.tensor([2, 7, 40, 41]))
    vocab = earlier_vocabulary(str(tmp_path / "h"), VOCAB, None)
    lm_head = training_lm_head(base, vocab)
    config = HeadsConfig(3, 3, HIDDEN, VOCAB, False, "", proposal_size=4)
    grown = initial_heads(base, config, lm_head, str(tmp_path / "h"))
    hidden = torch.randn(5, HIDDEN)
    full = training_lm_head(base, None)
    torch.testing.assert_close(grown(hidden), earlier(hidden, full)[..., vocab])
    assert grown.training and all(p.requires_grad for p in grown.parameters())
    with pytest.raises(ValueError, match="propose 4 tokens: continued training keeps them"):
        earlier_vocabulary(str(tmp_path / "h"), VOCAB, 8)


@pytest.mark.parametrize("config, message", [
    (HeadsConfig(2, 1, HIDDEN, VOCAB, False, "", proposal_size=4), "the earlier heads are 3, this training has 2"),
    (HeadsConfig(3, 0, HIDDEN, VOCAB, False, "", proposal_size=4), "have 1 ResBlocks: train with at least as many"),
    (HeadsConfig(3, 1, HIDDEN, VOCAB, True), "have their own projections: continue with own_projection"),
    (HeadsConfig(3, 1, HIDDEN, VOCAB, False, "", proposal_size=5), "project onto 4 tokens, this training onto 5"),
])
def test_growing_refuses_heads_it_cannot_continue(config, message):
    torch.manual_seed(0)
    earlier = MedusaHeads(HeadsConfig(3, 1, HIDDEN, VOCAB, False, "", proposal_size=4))
    with pytest.raises(ValueError, match=message):
        grown_from(earlier, config, nn.Linear(HIDDEN, config.projection_rows, bias=False))


def test_proposal_only_ranking_equals_the_proposal_ranks_of_the_full_ranking():
    base = tiny_base("llama")
    conversations, hidden = generate_responses(base, [[5, 6, 7], [9, 4], [3]], max_new_tokens=12, batch_size=3)
    cache = hidden_cache_of(conversations, hidden)
    rows, targets = cache.targets(3, [0, 1, 2])
    vocab = training_vocabulary(cache, VOCAB, 6)
    heads = random_heads(3, seed=1, shared=True)
    full_lm_head = training_lm_head(base, None)
    _, ranked = evaluate_heads(heads, full_lm_head, cache, rows, targets, vocab)
    cheap, same = evaluate_heads(heads, full_lm_head, cache, rows, targets, vocab, proposal_only=True)
    assert cheap == same
    assert cheap.top1 == pytest.approx(ranked.top1) and cheap.top5 == pytest.approx(ranked.top5)
    assert sum(ranked.top5) > 0  # the rows hit something, so the comparison means something
