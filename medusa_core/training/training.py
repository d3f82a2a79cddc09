"""Medusa-1 head training with a frozen backbone, on self-distilled text and cached hidden states."""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from medusa_core.modeling.default_model import cache_root
from medusa_core.training.distill_chunks import iter_chunks, load_distilled
from medusa_core.training.distill_data import (
    IGNORE,
    HiddenCache,
    build_hidden_cache,
    data_key,
    encode_prompts,
    generate_responses,
    hidden_cache_of,
    load_conversations,
    load_hidden_cache,
    read_prompt_file,
    save_conversations,
    save_hidden_cache,
)
from medusa_core.modeling.heads import HeadsConfig, MedusaHeads
from medusa_core.modeling.heads_io import save_heads
from medusa_core.modeling.models import BaseModel
from medusa_core.modeling.proposal_vocab import lm_head_rows, positions_in

CHECKPOINT = "training-checkpoint.pt"
Stage = Callable[[str, int, int], None]  # (stage name, done, total)


@dataclass(frozen=True)
class TrainConfig:
    prompts: str
    out: str
    num_heads: int = 4
    num_layers: int = 1
    max_new_tokens: int = 192
    gen_batch_size: int = 48
    epochs: int = 2
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    seed: int = 0
    checkpoint_every: int = 50
    full_vocab: bool = False  # False: the loss's softmax spans only the tokens the conversations use
    distilled: tuple[str, ...] = ()  # folders of distill chunks to train on instead of generating from `prompts`

    def __post_init__(self) -> None:
        if not self.prompts and not self.distilled:
            raise ValueError("need training prompts or distilled answers (--distilled FOLDER)")
        if self.num_heads < 1 or self.num_layers < 0:
            raise ValueError("need num_heads >= 1 and num_layers >= 0")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("need epochs >= 1, batch_size >= 1 and lr > 0")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class HeadAccuracy:
    top1: list[float]  # per head
    top5: list[float]
    samples: int


def distilled_hidden_cache(base: BaseModel, folders: tuple[str, ...], stage: Stage | None) -> HiddenCache:
    """Hidden states recomputed from saved distill chunks (cached, keyed by the chunk files)."""
    files = [p for folder in folders for p in iter_chunks(folder)]
    if not files:
        raise ValueError(f"no distill chunks (chunk-*.json.xz) in {', '.join(folders)}")
    key = hashlib.sha256(json.dumps([base.name] + [[p.name, p.stat().st_size] for p in files]).encode()).hexdigest()[:16]
    hidden_file = cache_root() / "distill" / f"chunks-{key}" / "hidden.pt"
    if hidden_file.is_file():
        return load_hidden_cache(hidden_file)
    hidden_file.parent.mkdir(parents=True, exist_ok=True)
    report = (lambda d, t: stage("hidden states", d, t)) if stage else None
    cache = build_hidden_cache(base, load_distilled(folders), report)
    save_hidden_cache(cache, hidden_file)
    return cache


def prepare_hidden_cache(base: BaseModel, config: TrainConfig, stage: Stage | None) -> HiddenCache:
    """Generate (or reuse) the self-distilled text and the frozen model's hidden states."""
    if config.distilled:
        return distilled_hidden_cache(base, config.distilled, stage)
    prompts = read_prompt_file(config.prompts)
    prompt_ids = encode_prompts(base, prompts, config.max_new_tokens)
    folder = cache_root() / "distill" / data_key(base, prompts, config.max_new_tokens)
    folder.mkdir(parents=True, exist_ok=True)
    conv_file, hidden_file = folder / "conversations.json", folder / "hidden.pt"
    if hidden_file.is_file():
        return load_hidden_cache(hidden_file)
    if conv_file.is_file():  # text kept from an interrupted run: recompute its hidden states
        report = (lambda d, t: stage("hidden states", d, t)) if stage else None
        cache = build_hidden_cache(base, load_conversations(conv_file), report)
    else:
        report = (lambda d, t: stage("generate", d, t)) if stage else None
        conversations, hidden = generate_responses(base, prompt_ids, config.max_new_tokens, config.gen_batch_size, report)
        save_conversations(conversations, conv_file)
        cache = hidden_cache_of(conversations, hidden)
    save_hidden_cache(cache, hidden_file)
    return cache


def split_conversations(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(n * val_fraction))
    return sorted(order[n_val:]), sorted(order[:n_val])


def conversation_vocabulary(cache: HiddenCache) -> torch.Tensor:
    """Sorted ids [U] of every token the conversations use; all head targets are among them."""
    return torch.unique(torch.cat(cache.tokens))


def training_lm_head(base: BaseModel, vocab: torch.Tensor | None) -> nn.Linear:
    """A frozen fp32 copy of the lm_head, cut to the rows of `vocab` when given.

    The answers of a small chat model use a few thousand of its 49k tokens; a softmax over
    those alone makes each training step several times cheaper on the CPU, where the vocabulary
    projection dominates. Validation always ranks over the full vocabulary.
    """
    return lm_head_rows(base.model.get_output_embeddings(), vocab, torch.float32)


def remap_targets(targets: torch.Tensor, vocab: torch.Tensor | None, vocab_size: int) -> torch.Tensor:
    """Token ids -> positions in `vocab` (IGNORE, and any id outside `vocab`, become IGNORE)."""
    if vocab is None:
        return targets
    positions = positions_in(vocab, targets.clamp(min=0), vocab_size)
    return torch.where((targets == IGNORE) | (positions < 0), IGNORE, positions)


def heads_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits [K, B, V], targets [B, K] -> mean cross-entropy over heads and valid targets."""
    k, b, v = logits.shape
    return F.cross_entropy(logits.reshape(k * b, v).float(), targets.T.reshape(-1), ignore_index=IGNORE)


def batches(rows: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    perm = rows[torch.randperm(rows.shape[0], generator=generator)]
    yield from perm.split(batch_size)


def evaluate_heads(heads: MedusaHeads, lm_head: torch.nn.Module, cache: HiddenCache, rows: torch.Tensor, targets: torch.Tensor) -> HeadAccuracy:
    """Per-head top-1/top-5 accuracy on held-out positions."""
    k = heads.config.num_heads
    hits1, hits5, counts = torch.zeros(k), torch.zeros(k), torch.zeros(k)
    with torch.inference_mode():
        for chunk in torch.arange(rows.shape[0]).split(256):
            hidden = cache.hidden[rows[chunk]].to(lm_head.weight.device, torch.float32)
            top5 = heads(hidden, lm_head).topk(5, dim=-1).indices.cpu()  # [K, B, 5]
            tgt = targets[chunk].T  # [K, B]
            valid = tgt != IGNORE
            hits1 += ((top5[..., 0] == tgt) & valid).sum(dim=1)
            hits5 += ((top5 == tgt[..., None]).any(-1) & valid).sum(dim=1)
            counts += valid.sum(dim=1)
    counts = counts.clamp(min=1)
    return HeadAccuracy((hits1 / counts).tolist(), (hits5 / counts).tolist(), int(rows.shape[0]))


# Settings a checkpoint does not depend on: where it is written and how often.
NOT_IN_CHECKPOINT = ("out", "checkpoint_every")


def checkpoint_settings(config: TrainConfig) -> dict:
    return {k: v for k, v in asdict(config).items() if k not in NOT_IN_CHECKPOINT}


def save_checkpoint(path: Path, heads: MedusaHeads, optimizer: torch.optim.Optimizer, step: int, config: TrainConfig) -> None:
    tmp = path.with_suffix(".partial")
    state = {"heads": heads.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "settings": checkpoint_settings(config)}
    torch.save(state, tmp)
    tmp.rename(path)  # atomic, so a kill mid-save leaves the previous checkpoint intact


def check_resumable(ckpt: dict, config: TrainConfig, path: Path) -> None:
    """Refuse to resume a checkpoint made with other settings: the result would be neither run."""
    saved, wanted = ckpt.get("settings"), checkpoint_settings(config)
    if saved is None:
        raise ValueError(f"{path} records no settings (an older version made it): delete it to train afresh")
    changed = [f"{k}={saved.get(k)!r} (now {v!r})" for k, v in wanted.items() if saved.get(k) != v]
    if changed:
        raise ValueError(f"{path} was made with other settings: {', '.join(changed)}; delete it to train afresh or use them")


def lr_at(step: int, total: int, base_lr: float) -> float:
    """Linear warm-up over 5% of the steps, then cosine decay to zero."""
    warm = max(1, total // 20)
    if step < warm:
        return base_lr * (step + 1) / warm
    return base_lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


@dataclass(frozen=True)
class TrainResult:
    heads: MedusaHeads
    accuracy: HeadAccuracy
    resumed_from_step: int  # 0 for a fresh run
    steps: int


def train_heads(base: BaseModel, config: TrainConfig, stage: Stage | None = None) -> TrainResult:
    """Train heads, resuming from the checkpoint in `config.out` if there is one."""
    torch.manual_seed(config.seed)
    cache = prepare_hidden_cache(base, config, stage)
    train_ids, val_ids = split_conversations(len(cache.tokens), config.val_fraction, config.seed)
    train_rows, train_targets_all = cache.targets(config.num_heads, train_ids)
    val_rows, val_targets = cache.targets(config.num_heads, val_ids)
    # `targets` is indexed by row of `hidden`; build a lookup so shuffled batches find theirs.
    vocab = None if config.full_vocab else conversation_vocabulary(cache)
    target_of = torch.full((cache.hidden.shape[0], config.num_heads), IGNORE, dtype=torch.long)
    target_of[train_rows] = remap_targets(train_targets_all, vocab, base.vocab_size)

    heads_config = HeadsConfig(config.num_heads, config.num_layers, base.hidden_size, base.vocab_size, True, base.model_id)
    heads = MedusaHeads(heads_config).to(base.device)
    # Heads train in fp32 against fp32 copies of the frozen lm_head, whatever the model's dtype.
    lm_head = training_lm_head(base, vocab)
    optimizer = torch.optim.AdamW(heads.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    step = 0
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, weights_only=True, map_location=base.device)
        check_resumable(ckpt, config, ckpt_path)
        heads.load_state_dict(ckpt["heads"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step = int(ckpt["step"])
    resumed_from = step

    steps_per_epoch = math.ceil(train_rows.shape[0] / config.batch_size)
    total = steps_per_epoch * config.epochs
    heads.train()
    while step < total:
        # One seeded permutation per epoch, so a resumed run sees the batches it would have.
        epoch_gen = torch.Generator().manual_seed(config.seed * 1000 + step // steps_per_epoch)
        for i, rows in enumerate(batches(train_rows, config.batch_size, epoch_gen)):
            if i < step % steps_per_epoch:
                continue  # resuming mid-epoch: same permutation, skip what was done
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, config.lr)
            hidden = cache.hidden[rows].to(base.device, torch.float32)  # [B, d]
            loss = heads_loss(heads(hidden, lm_head), target_of[rows].to(base.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if stage:
                stage(f"train (loss {loss.item():.3f})", step, total)
            if step % config.checkpoint_every == 0 or step == total:
                save_checkpoint(ckpt_path, heads, optimizer, step, config)
            if step % steps_per_epoch == 0:
                break
    heads.eval()
    accuracy = evaluate_heads(heads, training_lm_head(base, None), cache, val_rows, val_targets)
    extra = {"train_positions": int(train_rows.shape[0]), "steps": total, "loss_vocabulary": int(lm_head.out_features)}
    card = {"training": asdict(config) | extra, "validation": asdict(accuracy)}
    save_heads(heads, out, extra={"medusa_explorer_training": card}, proposal_tokens=vocab)
    (out / "training.json").write_text(json.dumps(card, indent=1))
    return TrainResult(heads, accuracy, resumed_from, total)
