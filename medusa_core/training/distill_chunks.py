"""Self-distillation text at scale: the base model's greedy answers, generated in resumable chunks.

Chunk i answers prompts [i*C, (i+1)*C) of a prompt file, in batches with left padding, and is
written atomically as one xz-compressed JSON file (format medusa-distill/1) of token ids. A killed
run loses at most the chunk it was in; a rerun skips every chunk already on disk. The files are
small enough to commit, so retraining only recomputes hidden states (batched forward passes)
instead of hours of generation.
"""

from __future__ import annotations

import hashlib
import json
import lzma
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from medusa_core.modeling.default_model import cache_root
from medusa_core.modeling.models import BaseModel
from medusa_core.training.distill_data import (
    Conversation,
    HiddenCache,
    encode_prompts,
    generate_responses,
    hidden_cache_of,
    read_prompt_file,
    save_hidden_cache,
)

FORMAT = "medusa-distill/1"
# (prompts done, prompts total, answer tokens so far, whether this chunk was generated rather than found)
ChunkProgress = Callable[[int, int, int, bool], None]


@dataclass(frozen=True)
class DistillConfig:
    prompts: str
    out: str
    chunk_size: int = 256
    batch_size: int = 64
    max_new_tokens: int = 256
    target_tokens: int | None = None  # stop after the chunk that reaches this many answer tokens

    def __post_init__(self) -> None:
        if self.chunk_size < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("chunk_size, batch_size and max_new_tokens must be >= 1")
        if self.target_tokens is not None and self.target_tokens < 1:
            raise ValueError(f"target_tokens must be >= 1, got {self.target_tokens}")


def prompts_digest(prompts: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:16]


def chunk_path(out: Path, index: int) -> Path:
    return out / f"chunk-{index:05d}.json.xz"


def write_chunk(path: Path, header: dict, conversations: Sequence[Conversation], first: int) -> None:
    rows = [
        {"prompt": first + i, "prompt_ids": c.prompt_ids, "response_ids": c.response_ids}
        for i, c in enumerate(conversations)
    ]
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(lzma.compress(json.dumps(header | {"rows": rows}, separators=(",", ":")).encode(), preset=9))
    tmp.rename(path)  # atomic: a kill mid-write leaves no half chunk behind


def read_chunk(path: Path) -> dict:
    data = json.loads(lzma.decompress(path.read_bytes()))
    if data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} chunk")
    return data


def chunk_header(base: BaseModel, config: DistillConfig, digest: str) -> dict:
    return {
        "format": FORMAT,
        "model": base.model_id,
        "prompts_file": Path(config.prompts).name,
        "prompts_sha": digest,
        "max_new_tokens": config.max_new_tokens,
    }


def check_chunk(path: Path, header: dict) -> int:
    """Answer tokens of an existing chunk, refusing one made with other settings."""
    data = read_chunk(path)
    for key in ("model", "prompts_sha", "max_new_tokens"):
        if data.get(key) != header[key]:
            raise ValueError(
                f"{path} was made with {key}={data.get(key)!r}, this run has {header[key]!r}: use another --out folder"
            )
    return sum(len(r["response_ids"]) for r in data["rows"])


def chunk_hidden_file(base: BaseModel, chunk: Path) -> Path:
    """Where the hidden states of a chunk's conversations are cached, keyed by the chunk's bytes."""
    key = hashlib.sha256(base.name.encode() + b"\0" + chunk.read_bytes()).hexdigest()[:16]
    return cache_root() / "distill" / "chunk-hidden" / f"{key}.pt"


def generate_chunk(base: BaseModel, prompt_ids: Sequence[list[int]], config: DistillConfig) -> HiddenCache:
    """The chunk's greedy answers, with the hidden states generation computed on the way."""
    conversations, hidden = generate_responses(base, prompt_ids, config.max_new_tokens, config.batch_size)
    return hidden_cache_of(conversations, hidden)


def save_chunk_hidden(base: BaseModel, path: Path, cache: HiddenCache) -> None:
    hidden_file = chunk_hidden_file(base, path)
    hidden_file.parent.mkdir(parents=True, exist_ok=True)
    save_hidden_cache(cache, hidden_file)


def distill(base: BaseModel, config: DistillConfig, progress: ChunkProgress | None = None) -> int:
    """Generate every missing chunk (until target_tokens); returns the answer tokens on disk."""
    prompts = read_prompt_file(config.prompts)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    header = chunk_header(base, config, prompts_digest(prompts))
    tokens = 0
    for index, first in enumerate(range(0, len(prompts), config.chunk_size)):
        if config.target_tokens is not None and tokens >= config.target_tokens:
            break
        path = chunk_path(out, index)
        part = prompts[first : first + config.chunk_size]
        found = path.is_file()
        if found:
            tokens += check_chunk(path, header)
        else:
            cache = generate_chunk(base, encode_prompts(base, part, config.max_new_tokens), config)
            conversations = [Conversation(t[: int(s) + 1].tolist(), t[int(s) + 1 :].tolist())
                             for t, s in zip(cache.tokens, cache.starts)]
            write_chunk(path, header, conversations, first)
            save_chunk_hidden(base, path, cache)  # training need not recompute them
            tokens += sum(len(c.response_ids) for c in conversations)
        if progress:
            progress(first + len(part), len(prompts), tokens, not found)
    return tokens


def iter_chunks(folder: str | Path) -> Iterator[Path]:
    yield from sorted(Path(folder).glob("chunk-*.json.xz"))


def chunk_conversations(path: Path) -> list[Conversation]:
    return [Conversation(row["prompt_ids"], row["response_ids"]) for row in read_chunk(path)["rows"]]


def load_distilled(folders: Sequence[str | Path]) -> list[Conversation]:
    """Every conversation of every chunk in the folders, in chunk order."""
    return [c for folder in folders for path in iter_chunks(folder) for c in chunk_conversations(path)]
