"""The training loss's vocabulary cut: same logits for the kept tokens, targets remapped onto them."""

import torch

from medusa_core.distill_data import IGNORE, HiddenCache
from medusa_core.training import conversation_vocabulary, remap_targets, training_lm_head
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
