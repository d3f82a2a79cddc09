"""The embedded default model: found in the package, converted once, clear messages otherwise."""

import json

import pytest

from medusa_core.modeling import default_model
from medusa_core.modeling.models import ModelLoadError, load_base_model


def test_missing_package_says_what_to_run(monkeypatch):
    monkeypatch.setattr(default_model.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(default_model.DefaultModelError, match="scripts/setup.sh"):
        default_model.gguf_path()


def test_converted_cache_is_reused_without_converting(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDUSA_CACHE", str(tmp_path))
    folder = default_model.converted_folder()
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / default_model.MARKER).write_text("{}")
    monkeypatch.setattr(default_model, "convert_gguf", lambda f: pytest.fail("converted again"))
    assert default_model.default_model_path() == str(folder)


def test_corrupt_cache_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDUSA_CACHE", str(tmp_path))
    folder = default_model.converted_folder()
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / default_model.MARKER).write_text("{}")
    with pytest.raises(ModelLoadError, match=r"rm -rf .*SmolLM2-135M-Instruct"):
        load_base_model(None, "cpu")


def test_default_model_loads_from_the_converted_cache():
    base = load_base_model(None, "cpu")  # converts first on a fresh machine
    assert base.name == str(default_model.converted_folder())
    assert default_model.is_converted(default_model.converted_folder())
    assert base.model_id == default_model.HUB_ID
    assert base.model.config.num_hidden_layers == 30 and base.hidden_size == 576 and base.vocab_size == 49152
    assert base.tokenizer.chat_template is not None


def test_converted_model_loads_without_the_gguf_quantizer(tmp_path, monkeypatch):
    """An older cache kept GGUF's quantization_config, so every load went through the quantizer."""
    monkeypatch.setenv("MEDUSA_CACHE", str(tmp_path))
    folder = default_model.converted_folder()
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "quantization_config": {"quant_method": "gguf"}}))
    (folder / default_model.MARKER).write_text("{}")
    default_model.default_model_path()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())


def test_default_model_has_no_quantizer():
    base = load_base_model(None, "cpu")
    assert getattr(base.model, "hf_quantizer", None) is None
    assert "quantization_config" not in json.loads((default_model.converted_folder() / "config.json").read_text())


def test_a_conversion_finished_meanwhile_by_another_process_is_kept(tmp_path, monkeypatch):
    """Two first runs at once (the app and the tests on a fresh machine) must not undo each other."""
    import transformers

    folder = tmp_path / "model"
    others_scratch = tmp_path / "model.partial-1"
    real_from_config = transformers.AutoModelForCausalLM.from_config

    def other_process_finishes_first(*args, **kwargs):
        others_scratch.mkdir()
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        (folder / default_model.MARKER).write_text('{"by": "the other process"}')
        return real_from_config(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_config", other_process_finishes_first)
    assert default_model.convert_gguf(folder) == folder
    assert json.loads((folder / default_model.MARKER).read_text()) == {"by": "the other process"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.partial-1"]  # ours is cleaned up
