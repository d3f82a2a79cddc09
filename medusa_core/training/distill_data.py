"""Self-distillation data: what the base model itself says to real prompts, and its hidden states.

Heads trained on the base model's own greedy continuations learn to predict what it will
actually say, which is what Medusa accepts. The frozen model's hidden states are computed once
and cached, so training epochs only touch the small heads.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from medusa_core.modeling.models import BaseModel, encode_prompt

IGNORE = -100
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Conversation:
    prompt_ids: list[int]
    response_ids: list[int]


def read_prompt_file(path: str | Path) -> list[str]:
    """One prompt per line; blank lines skipped. An empty file is an error."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompt file {path} does not exist")
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"prompt file {path} has no prompts")
    return prompts


def encode_prompts(base: BaseModel, prompts: Sequence[str], room: int) -> list[list[int]]:
    """Chat-templated ids; refuses prompts that leave fewer than `room` tokens of context."""
    encoded = [encode_prompt(base.tokenizer, p) for p in prompts]
    for i, ids in enumerate(encoded):
        if len(ids) + room > base.context_length:
            raise ValueError(
                f"prompt {i + 1} has {len(ids)} tokens; with {room} new tokens it exceeds the "
                f"model's context of {base.context_length}"
            )
    return encoded


def generate_responses(
    base: BaseModel, prompt_ids: Sequence[list[int]], max_new_tokens: int, batch_size: int, progress: Progress | None = None
) -> tuple[list[Conversation], list[torch.Tensor]]:
    """Greedy continuations, batched with left padding (numerically a hair off unbatched greedy),
    and their hidden states [len(response), d] fp16 at the positions the heads read (the last
    prompt token onward), kept from generation so they need not be computed again."""
    pad = base.pad_token_id
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))  # less padding
    conversations: dict[int, Conversation] = {}
    hidden: dict[int, torch.Tensor] = {}
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = [prompt_ids[i] for i in rows]
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch], device=base.device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=base.device)
        with torch.inference_mode():
            out = base.model.generate(
                input_ids=input_ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad,
                output_hidden_states=True, return_dict_in_generate=True,
            )
        # out.hidden_states[step][-1] is the final (normed) layer; step 0 covers the prompt.
        steps = torch.stack([layers[-1][:, -1] for layers in out.hidden_states], dim=1)  # [B, S, d]
        for row, i in enumerate(rows):
            response = trim_response(out.sequences[row, width:].tolist(), base.eos_token_ids)
            conversations[i] = Conversation(prompt_ids[i], response)
            hidden[i] = steps[row, : len(response)].to("cpu", torch.float16)
        if progress:
            progress(min(start + batch_size, len(order)), len(order))
    return [conversations[i] for i in range(len(prompt_ids))], [hidden[i] for i in range(len(prompt_ids))]


def trim_response(row: list[int], eos: frozenset[int]) -> list[int]:
    for j, tok in enumerate(row):
        if tok in eos:
            return row[: j + 1]
    return row


def head_targets(tokens: Sequence[int], start: int, num_heads: int) -> torch.Tensor:
    """For positions t = start..len-2: the tokens t+k+2 that head k must predict [T, K]."""
    n = len(tokens)
    rows = [[tokens[t + k + 2] if t + k + 2 < n else IGNORE for k in range(num_heads)] for t in range(start, n - 1)]
    return torch.tensor(rows, dtype=torch.long).reshape(-1, num_heads)


def hidden_states_for(base: BaseModel, conv: Conversation) -> torch.Tensor:
    """Hidden states [T, d] at the positions heads are used: last prompt token onward."""
    return hidden_states_batch(base, [conv])[0]


def hidden_states_batch(base: BaseModel, convs: Sequence[Conversation]) -> list[torch.Tensor]:
    """One forward pass over several conversations, right-padded: under causal attention the
    padding after a sequence cannot reach its states. Per conversation [len(response), d] fp16."""
    seqs = [c.prompt_ids + c.response_ids for c in convs]
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [base.pad_token_id] * (width - len(s)) for s in seqs], device=base.device)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=base.device)
    with torch.inference_mode():
        states = base.model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, width, d]
    return [
        states[i, len(c.prompt_ids) - 1 : len(s) - 1].to("cpu", torch.float16)
        for i, (c, s) in enumerate(zip(convs, seqs))
    ]


def length_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Indices grouped by length (least padding) so each group's padded size stays within
    `batch_tokens`; a sequence longer than that goes alone."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[i] * (len(groups[-1]) + 1) <= batch_tokens:
            groups[-1].append(i)  # sorted ascending, so lengths[i] is the group's padded width
        else:
            groups.append([i])
    return groups


def data_key(base: BaseModel, prompts: Sequence[str], max_new_tokens: int) -> str:
    digest = hashlib.sha256(json.dumps([base.name, list(prompts), max_new_tokens]).encode()).hexdigest()
    return digest[:16]


@dataclass(frozen=True)
class HiddenCache:
    hidden: torch.Tensor  # [T, d] fp16
    tokens: list[torch.Tensor]  # per conversation, the full token list (prompt + response)
    starts: torch.Tensor  # [C] first position (last prompt token) of each conversation
    offsets: torch.Tensor  # [C + 1] where each conversation's rows begin in `hidden`

    def targets(self, num_heads: int, conversations: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Row indices into `hidden` and their head targets [R, K] for the chosen conversations."""
        rows, targets = [], []
        for c in conversations:
            rows.append(torch.arange(int(self.offsets[c]), int(self.offsets[c + 1])))
            targets.append(head_targets(self.tokens[c].tolist(), int(self.starts[c]), num_heads))
        return torch.cat(rows), torch.cat(targets)

    def root_tokens(self) -> torch.Tensor:
        """[T] per row of `hidden` (position t), the token t+1: the root pending when heads read h_t."""
        return torch.cat([t[int(s) + 1 :] for t, s in zip(self.tokens, self.starts)])


def build_hidden_cache(
    base: BaseModel, conversations: Sequence[Conversation], progress: Progress | None = None, batch_tokens: int = 8192
) -> HiddenCache:
    """Recompute the hidden states of saved conversations, in batches of about `batch_tokens` tokens."""
    hidden: list[torch.Tensor | None] = [None] * len(conversations)
    lengths = [len(c.prompt_ids) + len(c.response_ids) for c in conversations]
    done = 0
    for group in length_batches(lengths, batch_tokens):
        for i, h in zip(group, hidden_states_batch(base, [conversations[i] for i in group])):
            hidden[i] = h
        done += len(group)
        if progress:
            progress(done, len(conversations))
    return hidden_cache_of(conversations, hidden)


def hidden_cache_of(conversations: Sequence[Conversation], hidden: Sequence[torch.Tensor]) -> HiddenCache:
    """Pack per-conversation hidden states [len(response), d] into one cache."""
    offsets = [0]
    for conv, h in zip(conversations, hidden, strict=True):
        if h.shape[0] != len(conv.response_ids):
            raise ValueError(f"{h.shape[0]} hidden states for a response of {len(conv.response_ids)} tokens")
        offsets.append(offsets[-1] + h.shape[0])
    tokens = [torch.tensor(c.prompt_ids + c.response_ids) for c in conversations]
    starts = torch.tensor([len(c.prompt_ids) - 1 for c in conversations])
    return HiddenCache(torch.cat(list(hidden)), tokens, starts, torch.tensor(offsets))


def save_hidden_cache(cache: HiddenCache, path: Path) -> None:
    tmp = path.with_suffix(".partial")
    torch.save({"hidden": cache.hidden, "tokens": cache.tokens, "starts": cache.starts, "offsets": cache.offsets}, tmp)
    tmp.rename(path)


def load_hidden_cache(path: Path) -> HiddenCache:
    data = torch.load(path, weights_only=True)
    return HiddenCache(data["hidden"], data["tokens"], data["starts"], data["offsets"])


def save_conversations(conversations: Sequence[Conversation], path: Path) -> None:
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps([[c.prompt_ids, c.response_ids] for c in conversations]))
    tmp.rename(path)


def load_conversations(path: Path) -> list[Conversation]:
    return [Conversation(p, r) for p, r in json.loads(path.read_text())]
