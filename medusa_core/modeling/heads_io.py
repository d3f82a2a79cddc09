"""Heads checkpoints: our folders and FasterDecoding's Medusa-1 layout, local or on the Hub.

Weight names follow FasterDecoding's ``medusa_head`` ModuleList of Sequentials:
``{head}.{layer}.linear.weight|bias`` for the ResBlocks and ``{head}.{num_layers}.weight`` for
a head's own projection, so folders written here load in their code and theirs load here.
Heads that read the pending root token add ``{head}.root.weight`` (their code refuses those).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from medusa_core.modeling.heads import HeadsConfig, MedusaHeads

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "medusa_lm_head.safetensors"
PT_FILE = "medusa_lm_head.pt"
TREE_FILE = "tree.json"  # the tree (and context lookup) shipped with the heads
PROPOSAL_FILE = "proposal_vocab.json"  # optional: the tokens the heads propose (proposal_vocab.py)
PROPOSAL_FORMAT = "medusa-proposal-vocab/1"


class HeadsLoadError(ValueError):
    """A heads folder that cannot be used (missing, malformed, or made for another model)."""


def to_checkpoint_state(heads: MedusaHeads) -> dict[str, torch.Tensor]:
    state = {}
    for h, blocks in enumerate(heads.blocks):
        for j, block in enumerate(blocks):
            state[f"{h}.{j}.linear.weight"] = block.linear.weight
            state[f"{h}.{j}.linear.bias"] = block.linear.bias
        if heads.proj is not None:
            state[f"{h}.{len(blocks)}.weight"] = heads.proj[h]
        if heads.root_proj is not None:
            state[f"{h}.root.weight"] = heads.root_proj[h]
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}


def save_heads(heads: MedusaHeads, folder: str | Path, extra: dict | None = None, proposal_tokens: torch.Tensor | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(heads.config.to_json() | (extra or {}), indent=1))
    save_file(to_checkpoint_state(heads), str(folder / SAFETENSORS_FILE))
    if proposal_tokens is not None:
        (folder / PROPOSAL_FILE).write_text(json.dumps({"format": PROPOSAL_FORMAT, "tokens": proposal_tokens.tolist()}))
    else:
        (folder / PROPOSAL_FILE).unlink(missing_ok=True)
    return folder


def load_proposal_tokens(spec: str, vocab_size: int) -> torch.Tensor | None:
    """The heads folder's proposal vocabulary [U], or None: propose from the whole vocabulary."""
    path = resolve_heads_folder(spec) / PROPOSAL_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        tokens = [int(t) for t in raw["tokens"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise HeadsLoadError(f"{path} is not a {PROPOSAL_FORMAT} file: {err}") from err
    if raw.get("format") != PROPOSAL_FORMAT:
        raise HeadsLoadError(f"{path} has format {raw.get('format')!r}, expected {PROPOSAL_FORMAT!r}")
    if not tokens or tokens != sorted(set(tokens)) or tokens[0] < 0 or tokens[-1] >= vocab_size:
        raise HeadsLoadError(f"{path} must list distinct, sorted token ids in [0, {vocab_size})")
    return torch.tensor(tokens, dtype=torch.long)


def resolve_heads_folder(spec: str) -> Path:
    """A local folder, or a Hub repo id downloaded (config + weights only) to the HF cache."""
    local = Path(spec).expanduser()
    if local.is_dir():
        return local
    if local.exists() or spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise HeadsLoadError(f"heads folder {spec!r} does not exist")
    try:
        from huggingface_hub import snapshot_download

        patterns = [CONFIG_FILE, SAFETENSORS_FILE, PT_FILE, PROPOSAL_FILE, TREE_FILE, "*accuracy*.json"]
        return Path(snapshot_download(spec, allow_patterns=patterns))
    except Exception as err:  # offline, unknown repo, no permission: all end the same way
        raise HeadsLoadError(f"heads {spec!r} are not a local folder and could not be fetched from the Hub: {err}") from err


def _read_state(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / SAFETENSORS_FILE).is_file():
        state = load_file(str(folder / SAFETENSORS_FILE))
    elif (folder / PT_FILE).is_file():
        state = torch.load(folder / PT_FILE, map_location="cpu", weights_only=True)
    else:
        raise HeadsLoadError(f"heads folder {folder} has neither {SAFETENSORS_FILE} nor {PT_FILE}")
    # Some exports keep the attribute name of the ModuleList in front of every key.
    return {k.removeprefix("medusa_head."): v for k, v in state.items()}


def _infer_config(raw: dict, state: dict[str, torch.Tensor], folder: Path) -> HeadsConfig:
    try:
        num_heads = int(raw["medusa_num_heads"])
        num_layers = int(raw["medusa_num_layers"])
    except (KeyError, TypeError, ValueError) as err:
        raise HeadsLoadError(f"{folder / CONFIG_FILE} needs integer medusa_num_heads and medusa_num_layers") from err
    proj_key = f"0.{num_layers}.weight"
    shared = proj_key not in state
    if shared and not raw.get("medusa_shared_lm_head", False):
        raise HeadsLoadError(f"heads in {folder} have no projection {proj_key!r} and are not marked as sharing the lm_head")
    if num_layers > 0:
        hidden = state["0.0.linear.weight"].shape[1] if "0.0.linear.weight" in state else raw.get("hidden_size")
    else:
        hidden = state[proj_key].shape[1] if not shared else raw.get("hidden_size")
    rows = None if shared else int(state[proj_key].shape[0])
    vocab = raw.get("vocab_size") or rows
    if hidden is None or vocab is None:
        raise HeadsLoadError(f"cannot tell hidden size and vocabulary of the heads in {folder}")
    # Own projections with fewer rows than the vocabulary project onto the folder's proposal tokens.
    proposal_size = 0 if rows is None or rows == int(vocab) else rows
    return HeadsConfig(
        num_heads=num_heads,
        num_layers=num_layers,
        hidden_size=int(hidden),
        vocab_size=int(vocab),
        shared_lm_head=shared,
        base_model_name_or_path=str(raw.get("base_model_name_or_path", "")),
        proposal_size=proposal_size,
        root_token="0.root.weight" in state,
    )


def _load_into(heads: MedusaHeads, state: dict[str, torch.Tensor], folder: Path) -> None:
    expected = set(to_checkpoint_state(heads))
    missing = sorted(expected - set(state))
    if missing:
        raise HeadsLoadError(f"heads weights in {folder} lack {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    with torch.no_grad():
        for h, blocks in enumerate(heads.blocks):
            for j, block in enumerate(blocks):
                block.linear.weight.copy_(state[f"{h}.{j}.linear.weight"])
                block.linear.bias.copy_(state[f"{h}.{j}.linear.bias"])
            if heads.proj is not None:
                heads.proj[h].copy_(state[f"{h}.{len(blocks)}.weight"])
            if heads.root_proj is not None:
                heads.root_proj[h].copy_(state[f"{h}.root.weight"])


def check_heads_fit(config: HeadsConfig, hidden_size: int, vocab_size: int, where: str) -> None:
    if config.hidden_size != hidden_size:
        raise HeadsLoadError(
            f"heads {where} have hidden size {config.hidden_size} but the base model has {hidden_size}: "
            f"they were trained for another model ({config.base_model_name_or_path or 'unknown'})"
        )
    if config.vocab_size != vocab_size:
        raise HeadsLoadError(
            f"heads {where} have a vocabulary of {config.vocab_size} but the base model has {vocab_size}: "
            f"they were trained for another model ({config.base_model_name_or_path or 'unknown'})"
        )


def load_heads(spec: str, hidden_size: int, vocab_size: int) -> MedusaHeads:
    """Load heads from a folder or Hub id and check they fit a base model of this shape."""
    folder = resolve_heads_folder(spec)
    if not (folder / CONFIG_FILE).is_file():
        raise HeadsLoadError(f"heads folder {folder} has no {CONFIG_FILE}")
    try:
        raw = json.loads((folder / CONFIG_FILE).read_text())
    except json.JSONDecodeError as err:
        raise HeadsLoadError(f"{folder / CONFIG_FILE} is not valid JSON: {err}") from err
    state = _read_state(folder)
    config = _infer_config(raw, state, folder)
    check_heads_fit(config, hidden_size, vocab_size, str(folder))
    heads = MedusaHeads(config)
    _load_into(heads, state, folder)
    return heads.eval()
