"""Heads that read the pending root token: fed each step's own root, saved, grown, trained (lossless: test_lossless)."""

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from medusa_core.engine.loop import DecodeConfig, generate, generate_batch
from medusa_core.engine.sampling import SamplingConfig
from medusa_core.engine.step import head_topk, heads_logits, root_embeddings
from medusa_core.engine.verify import forward_hidden, new_cache
from medusa_core.modeling.heads import HeadsConfig, MedusaHeads
from medusa_core.modeling.heads_io import SAFETENSORS_FILE, load_heads, save_heads
from medusa_core.training.distill_data import generate_responses, hidden_cache_of
from medusa_core.training.training import RootEmbeds, TrainConfig, param_groups
from medusa_core.training.warm_start import grown_from
from tiny_models import HIDDEN, VOCAB, medusa_of, random_heads, tiny_base

BASES = {arch: tiny_base(arch) for arch in ("llama", "qwen2")}


def root_heads(num_heads: int, seed: int, shared: bool = True) -> MedusaHeads:
    return random_heads(num_heads, seed, shared, root_token=True)


def test_a_zero_root_input_changes_no_logit_and_a_missing_root_is_refused():
    plain = random_heads(3, seed=2, shared=True)
    reading = MedusaHeads(HeadsConfig(3, 1, HIDDEN, VOCAB, True, root_token=True))
    reading.load_state_dict(plain.state_dict(), strict=False)
    lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)
    x, e = torch.randn(4, HIDDEN), torch.randn(4, HIDDEN)
    torch.testing.assert_close(reading(x, lm_head, None, e), plain(x, lm_head))
    with pytest.raises(ValueError, match="read the pending root token"):
        reading(x, lm_head)
    with torch.no_grad():
        reading.root_proj.normal_()
    assert not torch.allclose(reading(x, lm_head, None, e), plain(x, lm_head))
    torch.testing.assert_close(reading(x, lm_head, 2, e), reading(x, lm_head, None, e)[:2])


@pytest.mark.parametrize("shared", [True, False])
def test_root_reading_heads_save_and_load(tmp_path, shared):
    heads = root_heads(2, seed=5, shared=shared)
    save_heads(heads, tmp_path / "h")
    assert {"0.root.weight", "1.root.weight"} <= set(load_file(str(tmp_path / "h" / SAFETENSORS_FILE)))
    loaded = load_heads(str(tmp_path / "h"), HIDDEN, VOCAB)
    assert loaded.config == heads.config and loaded.config.root_token
    x, e = torch.randn(3, HIDDEN), torch.randn(3, HIDDEN)
    lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)
    torch.testing.assert_close(loaded(x, lm_head, None, e), heads(x, lm_head, None, e))


def test_each_step_drafts_from_the_heads_reading_that_steps_root():
    """A step's proposals are the heads' top-k at the last accepted position, reading the root the
    model chose there; reading any other token would propose other tokens."""
    base = BASES["llama"]
    medusa = medusa_of(base, root_heads(4, seed=1))
    tree = [(0,), (1,), (2,), (0, 0), (0, 1), (0, 0, 0), (0, 0, 0, 0)]
    prompt = [5, 6, 7]
    record = generate(medusa, "", tree, DecodeConfig(max_new_tokens=24), prompt_ids=prompt)
    seq = prompt + record.tokens
    with torch.no_grad():
        hidden = forward_hidden(base.model, torch.tensor([seq]), new_cache(), torch.arange(len(seq))[None])  # [L, d]
        emitted, differs = 0, 0
        for step in record.steps:
            at = len(prompt) + emitted - 1  # the last accepted position; its own next token is this step's root
            assert step.nodes[0].token_id == seq[at + 1]
            expected, _ = head_topk(heads_logits(medusa, hidden[at], roots=torch.tensor(seq[at + 1])), 3, None)
            assert expected.tolist() == step.head_topk
            wrong_root = torch.tensor((seq[at + 1] + 1) % VOCAB)
            other, _ = head_topk(heads_logits(medusa, hidden[at], roots=wrong_root), 3, None)
            differs += other.tolist() != step.head_topk
            emitted += len(step.emitted)
    assert len(record.steps) > 3 and differs > 0


def node_tokens(record) -> list[list[int]]:
    return [[n.token_id for n in s.nodes] for s in record.steps]


@pytest.mark.parametrize("sampling", [None, SamplingConfig(1.0)])
def test_batched_rows_draft_from_their_own_roots(sampling):
    """Each row of a batch drafts the trees it drafts alone (its heads read its own root), greedy and sampled."""
    medusa = medusa_of(BASES["qwen2"], root_heads(4, seed=3))
    tree = [(0,), (1,), (0, 0), (1, 0), (0, 0, 0)]
    rows, seeds = [[3, 1, 4], [1, 5, 9, 2, 6], [5]], [7, 8, 9]
    batched = generate_batch(medusa, [""] * 3, tree, DecodeConfig(20, sampling=sampling), prompt_ids=rows, seeds=seeds)
    for prompt, seed, record in zip(rows, seeds, batched):
        alone = generate(medusa, "", tree, DecodeConfig(20, sampling=sampling, seed=seed), prompt_ids=prompt)
        assert record.tokens == alone.tokens
        assert node_tokens(record) == node_tokens(alone)


def test_each_rows_root_is_its_next_token_and_head_0s_target_the_one_after():
    base = BASES["llama"]
    conversations, hidden = generate_responses(base, [[5, 6], [9], [3, 4, 8]], max_new_tokens=6, batch_size=3)
    cache = hidden_cache_of(conversations, hidden)
    roots = cache.root_tokens()
    assert roots.shape[0] == cache.hidden.shape[0]
    for c, conv in enumerate(conversations):
        assert roots[cache.offsets[c] : cache.offsets[c + 1]].tolist() == conv.response_ids
    rows, targets = cache.targets(2, [0, 1, 2])
    inside = targets[:-1, 0] != -100
    assert torch.equal(targets[:-1, 0][inside], roots[rows[1:]][inside])  # t+2 of row r is the root of row r+1
    embeds = RootEmbeds.of(base, cache)
    torch.testing.assert_close(embeds(rows[:4]), base.model.get_input_embeddings().weight[roots[rows[:4]]])


def test_growing_plain_heads_by_a_root_input_changes_nothing_and_the_reverse_is_refused():
    earlier = random_heads(3, seed=4, shared=True)
    lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)
    grown = grown_from(earlier, HeadsConfig(3, 2, HIDDEN, VOCAB, True, root_token=True), lm_head)
    x, e = torch.randn(5, HIDDEN), torch.randn(5, HIDDEN)
    torch.testing.assert_close(grown(x, lm_head, None, e), earlier(x, lm_head))
    with pytest.raises(ValueError, match="continue with root_token"):
        grown_from(root_heads(3, seed=0), HeadsConfig(3, 1, HIDDEN, VOCAB, True), lm_head)


def test_the_root_input_learns_at_its_own_rate_and_needs_root_heads():
    heads = root_heads(2, seed=0)
    config = TrainConfig(prompts="p.txt", out="o", lr=1e-4, root_token=True, root_lr=3e-3)
    rest, root = param_groups(heads, config)
    assert root["params"] == [heads.root_proj] and root["base_lr"] == 3e-3 and rest["base_lr"] == 1e-4
    assert len(rest["params"]) + 1 == len(list(heads.parameters()))
    [only] = param_groups(random_heads(2), TrainConfig(prompts="p.txt", out="o"))
    assert only["base_lr"] == 1e-3
    with pytest.raises(ValueError, match="root_lr must be > 0 and needs root_token"):
        TrainConfig(prompts="p.txt", out="o", root_lr=1e-3)


class ScaledEmbedding(nn.Embedding):
    """An embedding that scales inside its module, as Gemma 3's does."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids) * 3.0


def test_training_embeds_roots_as_decoding_does_even_when_the_embedding_scales():
    base = tiny_base("llama")
    old = base.model.get_input_embeddings()
    scaled = ScaledEmbedding(*old.weight.shape)
    scaled.weight = old.weight
    base.model.set_input_embeddings(scaled)
    conversations, hidden = generate_responses(base, [[5, 6], [9]], max_new_tokens=4, batch_size=2)
    cache = hidden_cache_of(conversations, hidden)
    rows = torch.arange(cache.hidden.shape[0])
    medusa = medusa_of(base, root_heads(2, seed=0))
    torch.testing.assert_close(
        RootEmbeds.of(base, cache)(rows), root_embeddings(medusa, cache.root_tokens(), torch.float32)
    )
