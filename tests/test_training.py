"""Distillation data and the training loss: captured hidden states, the vocabulary cut."""

import pytest
import torch

from medusa_core.training.distill_data import IGNORE, HiddenCache, generate_responses, hidden_cache_of, hidden_states_for
from medusa_core.training.training import conversation_vocabulary, remap_targets, training_lm_head
from tiny_models import HIDDEN, VOCAB, tiny_base


def test_vocabulary_is_every_token_the_conversations_use():
    tokens = [torch.tensor([5, 3, 9]), torch.tensor([9, 1])]
    cache = HiddenCache(torch.zeros(3, HIDDEN), tokens, torch.tensor([0, 0]), torch.tensor([0, 2, 3]))
    assert conversation_vocabulary(cache).tolist() == [1, 3, 5, 9]


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
