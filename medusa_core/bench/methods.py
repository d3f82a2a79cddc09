"""The decoding methods the benchmark compares, each a callable that times one generation.

Every runner takes the prompt's token ids (the same list for all methods) and a token budget and
returns a `Run`: the generated ids, the wall time of the generation alone (tokenisation excluded,
CUDA synchronised before and after, `time.perf_counter`), and how many verification steps it took
with the accepted length of each.

Steps are counted per method family:
- transformers methods: one step per forward pass of the target model (plain greedy: one token a
  step; assisted / prompt lookup: the pass that verifies the drafted tokens, whose first pass also
  holds the prompt);
- our own loop: one step per tree verification pass, the prefill not counted (it yields the root
  token, which is emitted by the first step), as in the generation record.
"""

from __future__ import annotations

import copy
import gc
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from transformers.generation.streamers import BaseStreamer

from medusa_core.spec.lookup import LookupConfig
from medusa_core.engine.loop import DecodeConfig, generate
from medusa_core.modeling.device import synchronize
from medusa_core.modeling.models import BaseModel, MedusaModel
from medusa_core.spec.trees import Path_

HF_GREEDY = "hf-greedy"
HF_PROMPT_LOOKUP = "hf-prompt-lookup"
HF_ASSISTED = "hf-assisted"
MEDUSA = "medusa"
KINDS = (HF_GREEDY, HF_PROMPT_LOOKUP, HF_ASSISTED, MEDUSA)


@dataclass(frozen=True)
class Method:
    """One contestant. `tree` is for MEDUSA (empty: our own plain greedy loop, heads skipped) and
    `lookup` its context-lookup chain; `draft_tokens` for prompt lookup; a method with a
    `skip_reason` is reported, never run."""

    name: str
    kind: str
    tree: tuple[Path_, ...] | None = None
    draft_tokens: int | None = None
    skip_reason: str | None = None
    aliases: tuple[str, ...] = ()
    lookup: LookupConfig | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown method kind {self.kind!r}; one of {KINDS}")
        if self.kind == MEDUSA and self.tree is None:
            raise ValueError(f"method {self.name!r}: a Medusa method needs a tree ([] for plain greedy)")

    @property
    def tree_nodes(self) -> int | None:
        """Most candidate nodes a step verifies, root excluded (the medusa_choices count plus the
        lookup chain); None off our loop."""
        if self.tree is None:
            return None
        return len(self.tree) + (self.lookup.tokens if self.lookup else 0)


@dataclass(frozen=True)
class Run:
    tokens: list[int]
    seconds: float
    steps: int
    accepted: list[int]  # accepted draft tokens per step (tokens per step - 1)

    @property
    def tokens_per_second(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else 0.0


Runner = Callable[[Sequence[int], int], Run]


class StepSizes(BaseStreamer):
    """A transformers streamer that records how many tokens each step added (prompt skipped)."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.sizes.append(int(value.numel()))

    def end(self) -> None:
        pass


def timed(device: torch.device, fn: Callable[[], object]) -> tuple[object, float]:
    """Run `fn` between two device synchronisations with Python's cyclic garbage collector
    paused (as timeit does, so a collection lands on no method); (its result, wall seconds)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        synchronize(device)
        start = time.perf_counter()
        out = fn()
        synchronize(device)
        return out, time.perf_counter() - start
    finally:
        if was_enabled:
            gc.enable()


def hf_kwargs(base: BaseModel, ids: Sequence[int], max_new_tokens: int) -> dict:
    """Arguments shared by every transformers generate() call: greedy, same stop tokens as ours."""
    eos = sorted(base.eos_token_ids)
    pad = base.model.generation_config.pad_token_id
    return dict(
        input_ids=torch.tensor([list(ids)], device=base.device),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=base.device),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        eos_token_id=eos or None,
        pad_token_id=pad if pad is not None else (eos[0] if eos else 0),
    )


def _new_tokens(out: torch.Tensor, prompt_len: int) -> list[int]:
    return out[0, prompt_len:].tolist()


def hf_greedy_runner(base: BaseModel) -> Runner:
    def run(ids: Sequence[int], max_new_tokens: int) -> Run:
        kwargs = hf_kwargs(base, ids, max_new_tokens)
        with torch.inference_mode():
            out, seconds = timed(base.device, lambda: base.model.generate(**kwargs))
        tokens = _new_tokens(out, len(ids))
        return Run(tokens, seconds, len(tokens), [0] * len(tokens))

    return run


def _drafted_run(out: torch.Tensor, prompt_len: int, seconds: float, steps: StepSizes) -> Run:
    tokens = _new_tokens(out, prompt_len)
    return Run(tokens, seconds, len(steps.sizes), [max(0, s - 1) for s in steps.sizes])


def hf_prompt_lookup_runner(base: BaseModel, draft_tokens: int, max_ngram: int = 2) -> Runner:
    def run(ids: Sequence[int], max_new_tokens: int) -> Run:
        steps = StepSizes()
        kwargs = hf_kwargs(base, ids, max_new_tokens) | dict(
            prompt_lookup_num_tokens=draft_tokens, max_matching_ngram_size=max_ngram, streamer=steps
        )
        with torch.inference_mode():
            out, seconds = timed(base.device, lambda: base.model.generate(**kwargs))
        return _drafted_run(out, len(ids), seconds, steps)

    return run


def hf_assisted_runner(base: BaseModel, draft: BaseModel) -> Runner:
    """Assisted generation with a draft model; its adaptive draft length is reset before each
    call so that every prompt starts from the same state (transformers carries it over)."""
    initial = copy.deepcopy(draft.model.generation_config)
    same_vocab = draft.vocab_size == base.vocab_size
    extra = {} if same_vocab else dict(tokenizer=base.tokenizer, assistant_tokenizer=draft.tokenizer)

    def run(ids: Sequence[int], max_new_tokens: int) -> Run:
        draft.model.generation_config = copy.deepcopy(initial)
        steps = StepSizes()
        kwargs = hf_kwargs(base, ids, max_new_tokens) | dict(assistant_model=draft.model, streamer=steps) | extra
        with torch.inference_mode():
            out, seconds = timed(base.device, lambda: base.model.generate(**kwargs))
        return _drafted_run(out, len(ids), seconds, steps)

    return run


def medusa_runner(medusa: MedusaModel, tree: Sequence[Path_], lookup: LookupConfig | None = None) -> Runner:
    tree = [list(p) for p in tree]

    def run(ids: Sequence[int], max_new_tokens: int) -> Run:
        config = DecodeConfig(max_new_tokens, None, 0, None, trace_text=False, lookup=lookup)
        record, seconds = timed(medusa.base.device, lambda: generate(medusa, "", tree, config, prompt_ids=ids))
        return Run(list(record.tokens), seconds, record.num_steps, [s.accepted_length for s in record.steps])

    return run


def make_runner(method: Method, medusa: MedusaModel, draft: BaseModel | None = None, max_ngram: int = 2) -> Runner:
    if method.skip_reason is not None:
        raise ValueError(f"method {method.name!r} is skipped: {method.skip_reason}")
    if method.kind == HF_GREEDY:
        return hf_greedy_runner(medusa.base)
    if method.kind == HF_PROMPT_LOOKUP:
        return hf_prompt_lookup_runner(medusa.base, method.draft_tokens or 10, max_ngram)
    if method.kind == HF_ASSISTED:
        if draft is None:
            raise ValueError(f"method {method.name!r} needs a draft model")
        return hf_assisted_runner(medusa.base, draft)
    return medusa_runner(medusa, method.tree or (), method.lookup)
