"""What head training reads: the frozen model's hidden states over self-distilled answers.

Hidden states of distill chunks are cached one chunk at a time, keyed by the chunk's bytes, so
growing the data set only computes the chunks that are new.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from medusa_core.modeling.default_model import cache_root
from medusa_core.modeling.models import BaseModel
from medusa_core.training.distill_chunks import chunk_conversations, chunk_hidden_file, iter_chunks
from medusa_core.training.distill_data import (
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

Stage = Callable[[str, int, int], None]  # (stage name, done, total)


def concat_hidden_caches(caches: Sequence[HiddenCache]) -> HiddenCache:
    """One cache holding every conversation of `caches`, in order."""
    lengths = torch.cat([c.offsets[1:] - c.offsets[:-1] for c in caches])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    return HiddenCache(
        torch.cat([c.hidden for c in caches]),
        [t for c in caches for t in c.tokens],
        torch.cat([c.starts for c in caches]),
        offsets,
    )


def distilled_hidden_cache(base: BaseModel, folders: Sequence[str], stage: Stage | None = None) -> HiddenCache:
    """Hidden states of every chunk in `folders`, recomputing only chunks not cached yet."""
    files = [p for folder in folders for p in iter_chunks(folder)]
    if not files:
        raise ValueError(f"no distill chunks (chunk-*.json.xz) in {', '.join(folders)}")
    caches = []
    for i, chunk in enumerate(files):
        hidden_file = chunk_hidden_file(base, chunk)
        if hidden_file.is_file():
            caches.append(load_hidden_cache(hidden_file))
        else:
            report = (lambda d, t, i=i: stage(f"hidden states, chunk {i + 1}/{len(files)}", d, t)) if stage else None
            cache = build_hidden_cache(base, chunk_conversations(chunk), report)
            hidden_file.parent.mkdir(parents=True, exist_ok=True)
            save_hidden_cache(cache, hidden_file)
            caches.append(cache)
    return concat_hidden_caches(caches)


def prompts_hidden_cache(base: BaseModel, prompts_file: str, max_new_tokens: int, gen_batch_size: int,
                         stage: Stage | None = None) -> HiddenCache:
    """Generate (or reuse) the self-distilled answers to a prompt file and their hidden states."""
    prompts = read_prompt_file(prompts_file)
    prompt_ids = encode_prompts(base, prompts, max_new_tokens)
    folder = cache_root() / "distill" / data_key(base, prompts, max_new_tokens)
    folder.mkdir(parents=True, exist_ok=True)
    conv_file, hidden_file = folder / "conversations.json", folder / "hidden.pt"
    if hidden_file.is_file():
        return load_hidden_cache(hidden_file)
    if conv_file.is_file():  # text kept from an interrupted run: recompute its hidden states
        report = (lambda d, t: stage("hidden states", d, t)) if stage else None
        cache = build_hidden_cache(base, load_conversations(conv_file), report)
    else:
        report = (lambda d, t: stage("generate", d, t)) if stage else None
        conversations, hidden = generate_responses(base, prompt_ids, max_new_tokens, gen_batch_size, report)
        save_conversations(conversations, conv_file)
        cache = hidden_cache_of(conversations, hidden)
    save_hidden_cache(cache, hidden_file)
    return cache


def response_token_counts(cache: HiddenCache, vocab_size: int) -> torch.Tensor:
    """[V] how often each token occurs in the answers (the heads' targets)."""
    answers = [t[int(s) + 1 :] for t, s in zip(cache.tokens, cache.starts)]
    return torch.bincount(torch.cat(answers), minlength=vocab_size)


def training_vocabulary(cache: HiddenCache, vocab_size: int, size: int | None) -> torch.Tensor:
    """Sorted token ids the heads learn to rank and may propose.

    None: every token the conversations use (all head targets are among them). A size keeps the
    `size` most frequent answer tokens; targets outside it are not learned, and never proposed."""
    if size is None:
        return torch.unique(torch.cat(cache.tokens))
    counts = response_token_counts(cache, vocab_size)
    kept = counts.topk(min(size, int((counts > 0).sum()))).indices
    return kept.sort().values
