"""Loading a base model (+ tokenizer) and its Medusa heads onto a device."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from medusa_core.modeling import default_model
from medusa_core.spec.lookup import LookupConfig
from medusa_core.accel.cpu_gqa import use_masked_gqa
from medusa_core.accel.cpu_matmul import matmul_report, use_few_rows_linears
from medusa_core.modeling.device import resolve_device, resolve_dtype
from medusa_core.modeling.heads import HeadsConfig, MedusaHeads
from medusa_core.modeling.heads_io import (
    PROPOSAL_FILE,
    TREE_FILE,
    HeadsLoadError,
    load_heads,
    load_proposal_tokens,
    resolve_heads_folder,
)
from medusa_core.modeling.logits import check_logits
from medusa_core.modeling.proposal_vocab import ProposalVocab
from medusa_core.spec.trees import Path_, chain_tree, load_tree_with_lookup

DEFAULT = "default"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_HEADS = REPO_ROOT / "heads" / "smollm2-135m-instruct"


class ModelLoadError(RuntimeError):
    """A base model or heads that cannot be loaded; the message says why."""


@dataclass(frozen=True)
class BaseModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    device: torch.device
    dtype: torch.dtype
    cpu_matmul: str = ""  # on the CPU: what computes the few-row matmuls (measured per machine)

    @property
    def model_id(self) -> str:
        """The name to record in checkpoints: the Hub id for the converted default model."""
        return default_model.HUB_ID if default_model.is_converted(Path(self.name)) else self.name

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def context_length(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", 2048))

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """Where decoding stops: the generation config's EOS ids, as `model.generate()` stops (none
        when it has none, whatever the tokenizer says)."""
        eos = self.model.generation_config.eos_token_id
        ids = eos if isinstance(eos, (list, tuple)) else [eos]
        return frozenset(int(i) for i in ids if i is not None)

    @property
    def pad_token_id(self) -> int:
        """A token for left padding in batches (never attended to)."""
        for pad in (self.tokenizer.pad_token_id, self.model.generation_config.pad_token_id, self.tokenizer.eos_token_id):
            if pad is not None:
                return int(pad)
        return min(self.eos_token_ids, default=0)


@dataclass(frozen=True)
class MedusaModel:
    base: BaseModel
    heads: MedusaHeads
    heads_name: str
    default_tree: tuple[Path_, ...]
    proposal: ProposalVocab | None = None  # None: heads propose from the whole vocabulary
    default_lookup: LookupConfig | None = None  # the context lookup shipped with the default tree
    heads_folder: str | None = None  # where the heads' files are (a Hub id's downloaded snapshot); None for random heads

    @property
    def num_heads(self) -> int:
        return self.heads.config.num_heads


def model_spec_or_default(spec: str | None) -> str:
    return spec or os.environ.get("MEDUSA_MODEL") or DEFAULT


def resolve_model_path(spec: str | None) -> str:
    spec = model_spec_or_default(spec)
    if spec != DEFAULT:
        return spec
    try:
        return default_model.default_model_path()
    except default_model.DefaultModelError:
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            raise
        return default_model.HUB_ID


def load_causal_lm(path: str, dev: torch.device, dt: torch.dtype) -> PreTrainedModel:
    """The model straight onto its device; PyTorch's SDPA attention where the model supports it,
    else its own (Gemma-2's soft-capped attention is eager only)."""
    kwargs: dict = {"dtype": dt, "device_map": str(dev)}
    try:
        return AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa", **kwargs)
    except ValueError as err:
        if "attention implementation" not in str(err) and "sdpa" not in str(err).lower():
            raise
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)


def prepare_base(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str, dev: torch.device, dt: torch.dtype
) -> BaseModel:
    """Frozen, in eval mode, checked: refused by name when decoding cannot reproduce its logits."""
    model.eval().requires_grad_(False)
    problem = check_logits(model, dev)
    if problem:
        raise ModelLoadError(f"cannot decode {name!r}: {problem}")
    report = ""
    if dev.type == "cpu":
        use_few_rows_linears(model)
        use_masked_gqa()  # CPU only: on a GPU, masked GQA may leave SDPA's fast kernels
        report = matmul_report()  # build and measure now (once per machine), never mid-request
    return BaseModel(model, tokenizer, name, dev, dt, report)


def load_base_model(spec: str | None = None, device: str = "auto", dtype: str = "auto") -> BaseModel:
    path = resolve_model_path(spec)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = load_causal_lm(path, dev, dt)
    except Exception as err:
        if default_model.is_converted(Path(path)):
            raise ModelLoadError(default_model.corrupt_cache_message(path, err)) from err
        raise ModelLoadError(f"cannot load base model {path!r}: {err}") from err
    return prepare_base(model, tokenizer, path, dev, dt)


def fresh_heads(base: BaseModel, num_heads: int = 4, num_layers: int = 1) -> MedusaHeads:
    """Untrained heads sharing the lm_head: each starts as the base model's own next-token guess."""
    config = HeadsConfig(num_heads, num_layers, base.hidden_size, base.vocab_size, True, base.name)
    return MedusaHeads(config)


def heads_spec_if_any(spec: str | None, model_spec: str | None) -> str | None:
    """The heads to use: given, else $MEDUSA_HEADS, else the shipped ones for the default model."""
    spec = spec or os.environ.get("MEDUSA_HEADS")
    if spec:
        return spec
    return str(DEFAULT_HEADS) if model_spec_or_default(model_spec) == DEFAULT else None


def resolve_heads_spec(spec: str | None, model_spec: str | None) -> str:
    found = heads_spec_if_any(spec, model_spec)
    if found is None:
        raise ModelLoadError("no heads given for a non-default model: pass --heads FOLDER|HUB_ID or --heads random")
    return found


def heads_default_tree(folder: Path, num_heads: int) -> tuple[tuple[Path_, ...], LookupConfig | None]:
    """The tree shipped beside the heads (tree.json) and the context lookup it recommends, else a
    chain over all heads and no lookup."""
    tree_file = folder / TREE_FILE
    return load_tree_with_lookup(tree_file) if tree_file.is_file() else (chain_tree(num_heads), None)


def proposal_vocab_of(
    heads: MedusaHeads, tokens: torch.Tensor | None, base: BaseModel, heads_spec: str
) -> ProposalVocab | None:
    """The heads' proposal vocabulary: the lm_head's rows for shared heads, the tokens alone for
    heads projecting onto them; checked against the heads' own projection size."""
    rows = heads.config.proposal_size
    if tokens is None:
        if rows:
            raise HeadsLoadError(f"heads {heads_spec} project onto {rows} proposal tokens but have no {PROPOSAL_FILE}")
        return None
    if heads.config.shared_lm_head:
        return ProposalVocab.from_lm_head(tokens, base.model.get_output_embeddings())
    if heads.config.projection_rows != tokens.shape[0]:
        raise HeadsLoadError(
            f"heads {heads_spec} project onto {heads.config.projection_rows} tokens but their {PROPOSAL_FILE} "
            f"lists {tokens.shape[0]}"
        )
    return ProposalVocab.for_own_projections(tokens, base.device)


def load_medusa(model: str | None = None, heads: str | None = None, device: str = "auto", dtype: str = "auto") -> MedusaModel:
    heads_spec = resolve_heads_spec(heads, model)
    base = load_base_model(model, device, dtype)
    proposal_tokens, lookup, folder = None, None, None
    if heads_spec == "random":
        medusa_heads = fresh_heads(base)
        tree = chain_tree(medusa_heads.config.num_heads)
    else:
        folder = resolve_heads_folder(heads_spec)  # a Hub id: downloaded once, tree and tables included
        medusa_heads = load_heads(heads_spec, base.hidden_size, base.vocab_size)
        tree, lookup = heads_default_tree(folder, medusa_heads.config.num_heads)
        proposal_tokens = load_proposal_tokens(heads_spec, base.vocab_size)
    medusa_heads.to(base.device, base.dtype).requires_grad_(False)
    if base.device.type == "cpu":
        use_few_rows_linears(medusa_heads)
    proposal = proposal_vocab_of(medusa_heads, proposal_tokens, base, heads_spec)
    return MedusaModel(base, medusa_heads, heads_spec, tree, proposal, lookup, None if folder is None else str(folder))


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, chat: bool | None = None) -> list[int]:
    """Token ids fed to the model: the chat template applied when the tokenizer has one."""
    use_chat = tokenizer.chat_template is not None if chat is None else chat
    if use_chat:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        return [int(i) for i in ids]
    return [int(i) for i in tokenizer(prompt)["input_ids"]]


