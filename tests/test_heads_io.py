"""Heads checkpoints: our folders, FasterDecoding's layout, and clear refusals."""

import json

import pytest
import torch
from torch import nn

from medusa_core.modeling.heads import HeadsConfig, MedusaHeads
from medusa_core.modeling.heads_io import HeadsLoadError, load_heads, save_heads, to_checkpoint_state
from tiny_models import HIDDEN, VOCAB, random_heads


def test_resblocks_are_distinct_modules_and_start_as_identity():
    heads = MedusaHeads(HeadsConfig(3, 2, HIDDEN, VOCAB, True))
    blocks = [b for head in heads.blocks for b in head]
    assert len({id(b) for b in blocks}) == 6
    x = torch.randn(5, HIDDEN)
    assert torch.equal(heads.head_states(x)[1], x)
    lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)
    assert heads(x, lm_head).shape == (3, 5, VOCAB)


def test_batched_projection_equals_per_head_projection():
    heads = random_heads(3, shared=False)
    x = torch.randn(2, 4, HIDDEN)
    out = heads(x)
    z = heads.head_states(x)
    for k in range(3):
        assert torch.allclose(out[k], z[k] @ heads.proj[k].T, atol=1e-5)


@pytest.mark.parametrize("shared", [True, False])
def test_the_first_heads_alone_equal_their_share_of_all_heads(shared):
    heads = random_heads(4, seed=2, shared=shared)
    lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)
    x = torch.randn(3, HIDDEN)
    full = heads(x, lm_head)  # [4, 3, V]
    for k in (1, 2, 4):
        assert torch.allclose(heads(x, lm_head, num_heads=k), full[:k], atol=1e-6)
        assert torch.allclose(heads.head_states(x, k), heads.head_states(x)[:k])


@pytest.mark.parametrize("shared", [True, False])
def test_save_load_round_trip(tmp_path, shared):
    heads = random_heads(2, seed=3, shared=shared)
    save_heads(heads, tmp_path / "h")
    loaded = load_heads(str(tmp_path / "h"), HIDDEN, VOCAB)
    x = torch.randn(3, HIDDEN)
    lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)
    assert torch.allclose(loaded(x, lm_head), heads(x, lm_head))
    config = json.loads((tmp_path / "h" / "config.json").read_text())
    assert config["medusa_num_heads"] == 2 and config["medusa_num_layers"] == 1


def write_faster_decoding_folder(folder, heads: MedusaHeads, fmt: str = "pt", prefix: str = ""):
    """A folder in FasterDecoding's Medusa-1 layout: their config keys, a .pt state dict."""
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"medusa_num_heads": heads.config.num_heads, "medusa_num_layers": heads.config.num_layers, "base_model_name_or_path": "lmsys/vicuna-7b-v1.3"})
    )
    state = {prefix + k: v for k, v in to_checkpoint_state(heads).items()}
    torch.save(state, folder / "medusa_lm_head.pt")


@pytest.mark.parametrize("prefix", ["", "medusa_head."])
def test_faster_decoding_layout_loads(tmp_path, prefix):
    heads = random_heads(3, seed=5, shared=False)
    write_faster_decoding_folder(tmp_path / "fd", heads, prefix=prefix)
    # keys exactly as FasterDecoding's ModuleList of Sequential(ResBlock, Linear) names them
    keys = set(torch.load(tmp_path / "fd" / "medusa_lm_head.pt", weights_only=True))
    assert prefix + "0.0.linear.weight" in keys and prefix + "2.1.weight" in keys
    loaded = load_heads(str(tmp_path / "fd"), HIDDEN, VOCAB)
    assert loaded.config.base_model_name_or_path == "lmsys/vicuna-7b-v1.3"
    x = torch.randn(4, HIDDEN)
    assert torch.allclose(loaded(x), heads(x))


def test_mismatched_heads_are_refused(tmp_path):
    save_heads(random_heads(2), tmp_path / "h")
    with pytest.raises(HeadsLoadError, match="hidden size 32 but the base model has 64"):
        load_heads(str(tmp_path / "h"), 64, VOCAB)
    with pytest.raises(HeadsLoadError, match="vocabulary of 96 but the base model has 100"):
        load_heads(str(tmp_path / "h"), HIDDEN, 100)


def test_broken_folders_are_refused(tmp_path):
    with pytest.raises(HeadsLoadError, match="does not exist"):
        load_heads(str(tmp_path / "missing"), HIDDEN, VOCAB)
    (tmp_path / "empty").mkdir()
    with pytest.raises(HeadsLoadError, match="no config.json"):
        load_heads(str(tmp_path / "empty"), HIDDEN, VOCAB)
    (tmp_path / "empty" / "config.json").write_text('{"medusa_num_heads": 2, "medusa_num_layers": 1}')
    with pytest.raises(HeadsLoadError, match="neither"):
        load_heads(str(tmp_path / "empty"), HIDDEN, VOCAB)
    save_heads(random_heads(2), tmp_path / "h")
    (tmp_path / "h" / "config.json").write_text('{"medusa_num_heads": 3, "medusa_num_layers": 1, "medusa_shared_lm_head": true, "hidden_size": 32, "vocab_size": 96}')
    with pytest.raises(HeadsLoadError, match="lack"):
        load_heads(str(tmp_path / "h"), HIDDEN, VOCAB)
    (tmp_path / "h" / "config.json").write_text("{oops")
    with pytest.raises(HeadsLoadError, match="not valid JSON"):
        load_heads(str(tmp_path / "h"), HIDDEN, VOCAB)
    (tmp_path / "h" / "config.json").write_text("{}")
    with pytest.raises(HeadsLoadError, match="medusa_num_heads"):
        load_heads(str(tmp_path / "h"), HIDDEN, VOCAB)


def test_unreachable_hub_id_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HeadsLoadError, match="could not be fetched from the Hub"):
        load_heads("FasterDecoding/medusa-vicuna-7b-v1.3", HIDDEN, VOCAB)


def test_hub_heads_bring_their_tree_and_tables(tmp_path, monkeypatch):
    """A Hub id is downloaded with its tree.json and accuracy table, and decoding uses that tree."""
    import huggingface_hub

    from medusa_core.modeling.models import load_medusa
    from medusa_core.spec.lookup import LookupConfig
    from medusa_core.spec.trees import save_tree_file

    snapshot = tmp_path / "snapshot"
    base_hidden, base_vocab = 576, 49152
    save_heads(random_heads_of(base_hidden, base_vocab), snapshot)
    save_tree_file(snapshot / "tree.json", [[0], [1]], num_heads=2, top_k=2, lookup=LookupConfig(4, 3, 2))
    asked = {}

    def fake_download(repo_id, allow_patterns):
        asked.update(repo=repo_id, patterns=allow_patterns)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    medusa = load_medusa(None, "someone/medusa-heads", "cpu")
    assert asked["repo"] == "someone/medusa-heads" and "tree.json" in asked["patterns"]
    assert any("accuracy" in p for p in asked["patterns"])
    assert medusa.default_tree == ((0,), (1,)) and medusa.default_lookup == LookupConfig(4, 3, 2)
    assert medusa.heads_folder == str(snapshot)


def random_heads_of(hidden: int, vocab: int) -> MedusaHeads:
    return MedusaHeads(HeadsConfig(2, 1, hidden, vocab, True))
