"""Heads proposing from a cut vocabulary: still lossless, proposals inside it, ranks within it."""

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medusa_core.training.calibration import head_ranks
from medusa_core.engine.loop import DecodeConfig, generate
from medusa_core.engine.step import heads_logits
from medusa_core.modeling.heads import HeadsConfig, MedusaHeads
from medusa_core.modeling.heads_io import PROPOSAL_FILE, HeadsLoadError, load_heads, load_proposal_tokens, save_heads
from medusa_core.modeling.models import MedusaModel, proposal_vocab_of
from medusa_core.modeling.proposal_vocab import ProposalVocab
from tiny_models import HIDDEN, VOCAB, greedy_reference, medusa_of, random_heads, tiny_base
from test_lossless import prompts, trees

BASES = {arch: tiny_base(arch) for arch in ("llama", "gpt2")}
vocabularies = st.lists(st.integers(0, VOCAB - 1), min_size=10, max_size=VOCAB, unique=True).map(sorted)


@pytest.mark.parametrize("arch", BASES)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(top_k=5), prompt=prompts, vocab=vocabularies, seed=st.integers(0, 3))
def test_cut_vocabulary_stays_lossless_and_proposes_only_its_tokens(arch, tree, prompt, vocab, seed):
    base = BASES[arch]
    medusa = medusa_of(base, random_heads(4, seed, shared=True), vocab)
    record = generate(medusa, "", tree, DecodeConfig(max_new_tokens=12), prompt_ids=prompt)
    assert record.tokens == greedy_reference(base, prompt, 12)
    proposed = {node.token_id for step in record.steps for node in step.nodes[1:]}
    assert proposed <= set(vocab)


def test_proposal_logits_are_the_full_logits_of_the_kept_tokens():
    base = BASES["llama"]
    heads = random_heads(4, 1, shared=True)
    vocab = [1, 5, 17, 60, VOCAB - 1] + list(range(20, 30))
    cut, full = medusa_of(base, heads, sorted(vocab)), medusa_of(base, heads)
    hidden = torch.randn(3, heads.config.hidden_size)
    torch.testing.assert_close(heads_logits(cut, hidden), heads_logits(full, hidden)[..., sorted(vocab)])


def test_ranks_are_within_the_proposal_vocabulary():
    base = BASES["llama"]
    heads = random_heads(4, 2, shared=True)
    tokens = [3, 9, 4, 40, 41, 7, 2, 8, 11, 12, 13, 50]
    vocab = sorted(set(range(0, VOCAB, 2)) | {3})
    full = head_ranks(medusa_of(base, heads), tokens, 1)
    cut = head_ranks(medusa_of(base, heads, vocab), tokens, 1)
    targets = torch.tensor([[tokens[t + k + 2] for k in range(4)] for t in range(1, len(tokens) - 5)])
    inside = torch.isin(targets, torch.tensor(vocab))
    assert torch.all(cut[~inside] == len(vocab))  # never proposed
    assert torch.all(cut[inside] <= full[inside])  # fewer competitors


def test_proposal_file_round_trip_and_refusals(tmp_path):
    heads = random_heads(2, shared=True)
    save_heads(heads, tmp_path / "h", proposal_tokens=torch.tensor([2, 5, 9]))
    assert load_proposal_tokens(str(tmp_path / "h"), VOCAB).tolist() == [2, 5, 9]
    save_heads(heads, tmp_path / "h")  # saved again without one: the stale file goes
    assert load_proposal_tokens(str(tmp_path / "h"), VOCAB) is None
    for bad, message in [
        ({"format": "medusa-proposal-vocab/1", "tokens": [5, 2]}, "distinct, sorted"),
        ({"format": "medusa-proposal-vocab/1", "tokens": [2, VOCAB]}, "distinct, sorted"),
        ({"format": "other", "tokens": [1]}, "expected 'medusa-proposal-vocab/1'"),
        ({"tokens": "x"}, "is not a medusa-proposal-vocab/1 file"),
    ]:
        (tmp_path / "h" / PROPOSAL_FILE).write_text(json.dumps(bad))
        with pytest.raises(HeadsLoadError, match=message):
            load_proposal_tokens(str(tmp_path / "h"), VOCAB)


def own_projection_heads(vocab: list[int], seed: int) -> MedusaHeads:
    """Random heads whose own projections map onto the `vocab` tokens alone (Medusa-1 layout, cut)."""
    torch.manual_seed(seed)
    heads = MedusaHeads(HeadsConfig(4, 1, HIDDEN, VOCAB, False, "", proposal_size=len(vocab)))
    with torch.no_grad():
        for p in heads.parameters():
            p.normal_(0, 0.5)
    return heads.eval()


@pytest.mark.parametrize("arch", BASES)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(top_k=5), prompt=prompts, vocab=vocabularies, seed=st.integers(0, 3))
def test_own_projections_onto_the_vocabulary_stay_lossless_and_propose_only_its_tokens(arch, tree, prompt, vocab, seed):
    base = BASES[arch]
    heads = own_projection_heads(vocab, seed)
    proposal = ProposalVocab.for_own_projections(torch.tensor(vocab), base.device)
    medusa = MedusaModel(base, heads, "test-heads", tree, proposal)
    record = generate(medusa, "", tree, DecodeConfig(max_new_tokens=12), prompt_ids=prompt)
    assert record.tokens == greedy_reference(base, prompt, 12)
    proposed = {node.token_id for step in record.steps for node in step.nodes[1:]}
    assert proposed <= set(vocab)
    hidden = torch.randn(2, HIDDEN)
    assert heads_logits(medusa, hidden).shape == (4, 2, len(vocab))  # the heads' own rows, no lm_head


def test_own_projection_folders_load_with_their_vocabulary_and_refuse_a_mismatch(tmp_path):
    base = BASES["llama"]
    vocab = [1, 4, 9, 16, 25, 36, 49, 64, 81]
    heads = own_projection_heads(vocab, 0)
    save_heads(heads, tmp_path / "h", proposal_tokens=torch.tensor(vocab))
    loaded = load_heads(str(tmp_path / "h"), HIDDEN, VOCAB)
    assert loaded.config.proposal_size == len(vocab) and not loaded.config.shared_lm_head
    proposal = proposal_vocab_of(loaded, load_proposal_tokens(str(tmp_path / "h"), VOCAB), base, "h")
    assert proposal.projection is None and proposal.tokens.tolist() == vocab
    x = torch.randn(3, HIDDEN)
    torch.testing.assert_close(loaded(x), heads(x))
    with pytest.raises(HeadsLoadError, match="project onto 9 tokens but their proposal_vocab.json lists 3"):
        proposal_vocab_of(loaded, torch.tensor([1, 2, 3]), base, "h")
    with pytest.raises(HeadsLoadError, match="project onto 9 proposal tokens but have no proposal_vocab.json"):
        proposal_vocab_of(loaded, None, base, "h")
