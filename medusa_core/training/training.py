"""Medusa-1 head training with a frozen backbone, on self-distilled text and cached hidden states."""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from medusa_core.modeling.heads import HeadsConfig, MedusaHeads
from medusa_core.modeling.heads_io import save_heads
from medusa_core.modeling.models import BaseModel
from medusa_core.modeling.proposal_vocab import lm_head_rows, positions_in
from medusa_core.training.distill_chunks import chunk_conversations, iter_chunks
from medusa_core.training.distill_data import IGNORE, HiddenCache
from medusa_core.training.losses import LOSSES, hard_loss, head_weights, soft_loss, teacher_logits
from medusa_core.training.training_data import Stage, distilled_hidden_cache, prompts_hidden_cache, training_vocabulary
from medusa_core.training.warm_start import earlier_vocabulary, initial_heads

CHECKPOINT = "training-checkpoint.pt"


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
    train_only: tuple[str, ...] = ()  # chunk folders added to training, never to validation (ShareGPT's own replies)
    loss: str = "hard"  # "hard": the next tokens; "soft": KL to the base model's distribution (Medusa-2)
    head_weight_decay: float = 1.0  # head k's loss weighs decay^k (Medusa: 0.8)
    proposal_vocab_size: int | None = None  # keep the N most frequent answer tokens (None: every token used)
    own_projection: bool = False  # each head trains its own projection onto the proposal tokens (Medusa-1)
    init_heads: str | None = None  # continue from these heads (grown to num_layers / own_projection) instead of fresh
    root_token: bool = False  # heads also read the pending root token (the base model's own token t+1)
    root_lr: float | None = None  # learning rate of the root-token input (None: lr), e.g. higher when continuing

    def __post_init__(self) -> None:
        if not self.prompts and not self.distilled:
            raise ValueError("need training prompts or distilled answers (--distilled FOLDER)")
        if self.train_only and not self.distilled:
            raise ValueError("train_only adds chunks to distilled answers: it needs distilled folders")
        if self.num_heads < 1 or self.num_layers < 0:
            raise ValueError("need num_heads >= 1 and num_layers >= 0")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("need epochs >= 1, batch_size >= 1 and lr > 0")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not 0 < self.head_weight_decay <= 1:
            raise ValueError(f"head_weight_decay must be in (0, 1], got {self.head_weight_decay}")
        if self.proposal_vocab_size is not None and (self.proposal_vocab_size < 1 or self.full_vocab):
            raise ValueError("proposal_vocab_size must be >= 1, and cannot be combined with full_vocab")
        if self.own_projection and self.full_vocab:
            raise ValueError("own_projection projects onto the data's tokens: it cannot be combined with full_vocab")
        if self.root_lr is not None and (self.root_lr <= 0 or not self.root_token):
            raise ValueError("root_lr must be > 0 and needs root_token")
        if self.init_heads is not None and self.full_vocab:
            raise ValueError("continued training keeps the earlier heads' proposal vocabulary: no full_vocab")


@dataclass(frozen=True)
class HeadAccuracy:
    top1: list[float]  # per head
    top5: list[float]
    samples: int


def prepare_hidden_cache(base: BaseModel, config: TrainConfig, stage: Stage | None) -> HiddenCache:
    if config.distilled:  # the train_only conversations come last
        return distilled_hidden_cache(base, config.distilled + config.train_only, stage)
    return prompts_hidden_cache(base, config.prompts, config.max_new_tokens, config.gen_batch_size, stage)


def split_conversations(n: int, val_fraction: float, seed: int, train_only: int = 0) -> tuple[list[int], list[int]]:
    """Train and validation conversations of the first n; the `train_only` after them all train."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(n * val_fraction))
    return sorted(order[n_val:]) + list(range(n, n + train_only)), sorted(order[:n_val])


def train_only_count(config: TrainConfig) -> int:
    return sum(len(chunk_conversations(p)) for folder in config.train_only for p in iter_chunks(folder))


def training_lm_head(base: BaseModel, vocab: torch.Tensor | None) -> nn.Linear:
    """A frozen fp32 copy of the lm_head, cut to the rows of `vocab` when given.

    The answers of a small chat model use a few thousand of its 49k tokens; a softmax over
    those alone makes each training step several times cheaper on the CPU, where the vocabulary
    projection dominates. Validation always ranks over the full vocabulary.
    """
    return lm_head_rows(base.model.get_output_embeddings(), vocab, torch.float32)


def heads_vocabulary(base: BaseModel, config: TrainConfig, cache: HiddenCache) -> torch.Tensor | None:
    """The tokens the heads learn to rank and propose: the earlier heads' when training continues
    from heads that have a proposal vocabulary, else the data's most frequent answer tokens."""
    if config.full_vocab:
        return None
    if config.init_heads:
        earlier = earlier_vocabulary(config.init_heads, base.vocab_size, config.proposal_vocab_size)
        if earlier is not None:
            return earlier
    return training_vocabulary(cache, base.vocab_size, config.proposal_vocab_size)


def remap_targets(targets: torch.Tensor, vocab: torch.Tensor | None, vocab_size: int) -> torch.Tensor:
    """Token ids -> positions in `vocab` (IGNORE, and any id outside `vocab`, become IGNORE)."""
    if vocab is None:
        return targets
    positions = positions_in(vocab, targets.clamp(min=0), vocab_size)
    return torch.where((targets == IGNORE) | (positions < 0), IGNORE, positions)


@dataclass(frozen=True)
class RootEmbeds:
    """The pending root's embedding per row of a hidden cache, for heads that read it."""

    embedding: nn.Module  # the base model's frozen input embeddings
    tokens: torch.Tensor  # [T] the root token of each row

    @classmethod
    def of(cls, base: BaseModel, cache: HiddenCache) -> "RootEmbeds":
        embedding = base.model.get_input_embeddings()
        return cls(embedding, cache.root_tokens().to(embedding.weight.device))

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        # Through the embedding module, as decoding embeds roots: some families scale inside it (Gemma 3).
        with torch.no_grad():
            return self.embedding(self.tokens[rows.to(self.tokens.device)]).to(torch.float32)  # [B, d]


def batches(rows: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    perm = rows[torch.randperm(rows.shape[0], generator=generator)]
    yield from perm.split(batch_size)


@dataclass
class HitCounter:
    """Top-1/top-5 hits of each head's ranking against its targets."""

    hits1: torch.Tensor  # [K]
    hits5: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def zeros(cls, k: int) -> "HitCounter":
        return cls(torch.zeros(k), torch.zeros(k), torch.zeros(k))

    def add(self, top5: torch.Tensor, tgt: torch.Tensor) -> None:
        """top5 [K, B, 5] token ids, tgt [K, B] (IGNORE where none)."""
        valid = tgt != IGNORE
        self.hits1 += ((top5[..., 0] == tgt) & valid).sum(dim=1)
        self.hits5 += ((top5 == tgt[..., None]).any(-1) & valid).sum(dim=1)
        self.counts += valid.sum(dim=1)

    def accuracy(self, samples: int) -> HeadAccuracy:
        counts = self.counts.clamp(min=1)
        return HeadAccuracy((self.hits1 / counts).tolist(), (self.hits5 / counts).tolist(), samples)


def evaluate_heads(
    heads: MedusaHeads, lm_head: nn.Module, cache: HiddenCache, rows: torch.Tensor, targets: torch.Tensor,
    vocab: torch.Tensor | None = None, proposal_only: bool = False, roots: RootEmbeds | None = None,
) -> tuple[HeadAccuracy, HeadAccuracy]:
    """Per-head top-1/top-5 on held-out positions: ranked over the full vocabulary, and over the
    proposal vocabulary `vocab` as decoding ranks (the same when `vocab` is None, or when the heads
    project onto `vocab` themselves and cannot rank anything else). `proposal_only` ranks shared heads
    through the lm_head's `vocab` rows alone (both results are then the proposal ranks): much cheaper."""
    k = heads.config.num_heads
    full, proposal = HitCounter.zeros(k), HitCounter.zeros(k)
    onto_vocab = bool(heads.config.proposal_size) or (proposal_only and vocab is not None)
    if onto_vocab and heads.config.shared_lm_head:
        lm_head = lm_head_rows(lm_head, vocab, torch.float32)
    with torch.inference_mode():
        for chunk in torch.arange(rows.shape[0]).split(256):
            hidden = cache.hidden[rows[chunk]].to(lm_head.weight.device, torch.float32)
            root_embeds = roots(rows[chunk]) if roots else None
            logits = heads(hidden, lm_head, None, root_embeds)  # [K, B, V], or [K, B, U] onto `vocab`
            tgt = targets[chunk].T  # [K, B]
            if onto_vocab:
                full.add(vocab[logits.topk(min(5, logits.shape[-1]), dim=-1).indices.cpu()], tgt)
                continue
            full.add(logits.topk(5, dim=-1).indices.cpu(), tgt)
            if vocab is not None:
                cut = logits[..., vocab.to(logits.device)]  # [K, B, U]
                proposal.add(vocab[cut.topk(min(5, cut.shape[-1]), dim=-1).indices.cpu()], tgt)
    samples = int(rows.shape[0])
    ranked_in_vocab = vocab is not None and not onto_vocab
    return full.accuracy(samples), (proposal if ranked_in_vocab else full).accuracy(samples)


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
    # A setting added after the checkpoint was made had its default then.
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    changed = [f"{k}={saved.get(k, defaults[k])!r} (now {v!r})" for k, v in wanted.items()
               if saved.get(k, defaults[k]) != v]
    if changed:
        raise ValueError(f"{path} was made with other settings: {', '.join(changed)}; delete it to train afresh or use them")


def param_groups(heads: MedusaHeads, config: TrainConfig) -> list[dict]:
    """The root-token input may learn at its own rate: when training continues, the earlier heads'
    weights move slowly (a high rate loses what they knew) while the new input starts from zero."""
    root = [heads.root_proj] if heads.root_proj is not None else []
    rest = [p for p in heads.parameters() if all(p is not r for r in root)]
    groups = [{"params": rest, "base_lr": config.lr, "lr": config.lr}]
    if root:
        root_lr = config.root_lr or config.lr
        groups.append({"params": root, "base_lr": root_lr, "lr": root_lr})
    return groups


def lr_at(step: int, total: int, base_lr: float) -> float:
    """Linear warm-up over 5% of the steps, then cosine decay to zero."""
    warm = max(1, total // 20)
    if step < warm:
        return base_lr * (step + 1) / warm
    return base_lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def batch_loss(
    heads: MedusaHeads, lm_head: nn.Module, hidden_rows: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor,
    weights: torch.Tensor, loss: str, roots: RootEmbeds | None = None,
) -> torch.Tensor:
    """The training loss of one batch of rows (targets [B, K] are positions in lm_head's vocabulary)."""
    hidden = hidden_rows[rows].to(lm_head.weight.device, torch.float32)  # [B, d]
    logits = heads(hidden, lm_head, None, roots(rows) if roots else None)  # [K, B, U]
    if loss == "soft":
        return soft_loss(logits, teacher_logits(hidden_rows, lm_head, rows, logits.shape[0]), targets, weights)
    return hard_loss(logits, targets, weights)


@dataclass(frozen=True)
class TrainResult:
    heads: MedusaHeads
    accuracy: HeadAccuracy  # held-out positions, ranked over the full vocabulary
    proposal_accuracy: HeadAccuracy  # the same, ranked over the proposal vocabulary as decoding does
    resumed_from_step: int  # 0 for a fresh run
    steps: int
    proposal_accuracy_before: HeadAccuracy | None = None  # the heads training continued from, same rows


def train_heads(base: BaseModel, config: TrainConfig, stage: Stage | None = None) -> TrainResult:
    """Train heads, resuming from the checkpoint in `config.out` if there is one."""
    torch.manual_seed(config.seed)
    cache = prepare_hidden_cache(base, config, stage)
    n_train_only = train_only_count(config)
    train_ids, val_ids = split_conversations(len(cache.tokens) - n_train_only, config.val_fraction, config.seed,
                                             n_train_only)
    train_rows, train_targets_all = cache.targets(config.num_heads, train_ids)
    val_rows, val_targets = cache.targets(config.num_heads, val_ids)
    # `targets` is indexed by row of `hidden`; build a lookup so shuffled batches find theirs.
    vocab = heads_vocabulary(base, config, cache)
    target_of = torch.full((cache.hidden.shape[0], config.num_heads), IGNORE, dtype=torch.long)
    target_of[train_rows] = remap_targets(train_targets_all, vocab, base.vocab_size)
    weights = head_weights(config.num_heads, config.head_weight_decay)

    own_rows = int(vocab.shape[0]) if config.own_projection else 0
    heads_config = HeadsConfig(
        config.num_heads, config.num_layers, base.hidden_size, base.vocab_size, not own_rows, base.model_id, own_rows,
        config.root_token,
    )
    roots = RootEmbeds.of(base, cache) if config.root_token else None
    # Heads train in fp32 against fp32 copies of the frozen lm_head, whatever the model's dtype.
    lm_head = training_lm_head(base, vocab)
    heads = initial_heads(base, heads_config, lm_head, config.init_heads)
    before = None
    if config.init_heads:  # the earlier heads on the same held-out rows: what continued training gained
        full_lm_head = training_lm_head(base, None)
        before = evaluate_heads(
            heads.eval(), full_lm_head, cache, val_rows, val_targets, vocab, proposal_only=True, roots=roots
        )[1]
    # PyTorch's fused AdamW: one kernel for all parameters, several times faster on the CPU for own projections.
    fused = base.device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(param_groups(heads, config), weight_decay=config.weight_decay, fused=fused)
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
                group["lr"] = lr_at(step, total, group["base_lr"])
            loss = batch_loss(
                heads, lm_head, cache.hidden, rows, target_of[rows].to(base.device), weights, config.loss, roots
            )
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
    accuracy, proposal = evaluate_heads(
        heads, training_lm_head(base, None), cache, val_rows, val_targets, vocab, roots=roots
    )
    extra = {"train_positions": int(train_rows.shape[0]), "steps": total, "loss_vocabulary": int(lm_head.out_features)}
    card = {"training": asdict(config) | extra, "validation": asdict(accuracy), "validation_proposal": asdict(proposal)}
    if before is not None:
        card["validation_proposal_before"] = asdict(before)
    save_heads(heads, out, extra={"medusa_explorer_training": card}, proposal_tokens=vocab)
    (out / "training.json").write_text(json.dumps(card, indent=1))
    return TrainResult(heads, accuracy, proposal, resumed_from, total, before)
