"""The Medusa decoding loop: draft, verify in one pass, accept, commit, repeat; traced.

Host and device meet twice a step, each time for one small packed transfer: the accepted path
(to commit the cache and pick where the next root is read), then the next root with the heads'
top-k (what the next step drafts from). Everything else a step needs on the host (the tree's
shape, its tokens, the trace) is host-side already.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Iterator, Sequence

import torch

from medusa_core.engine.acceptance import TypicalConfig, accept_greedy, accept_typical, sample_typical
from medusa_core.engine.buffers import TreeBuffers, layout_from_parents
from medusa_core.engine.drafters import DraftContext, MergedTree, drafters_for, merge_drafts
from medusa_core.engine.records import GenerationRecord, Node, StepRecord
from medusa_core.engine.sampling import SamplingConfig, accept_exact, draw, processed_probs
from medusa_core.engine.verify import commit_kv, prefill, verify_tree
from medusa_core.modeling.device import synchronize
from medusa_core.modeling.logits import final_logits
from medusa_core.modeling.models import MedusaModel, encode_prompt
from medusa_core.modeling.proposal_vocab import ProposalVocab
from medusa_core.spec.lookup import LookupConfig
from medusa_core.spec.trees import Path_, tree_depth, tree_top_k, validate_tree


class PromptTooLongError(ValueError):
    """The prompt does not fit the model's context."""


@dataclass(frozen=True)
class DecodeConfig:
    max_new_tokens: int = 128
    typical: TypicalConfig | None = None  # None: lossless greedy
    seed: int = 0
    chat: bool | None = None  # None: the chat template when the tokenizer has one
    trace_text: bool = True  # decode each node's text into the trace (off for benchmarks)
    lookup: LookupConfig | None = None  # also verify a chain copied from the context each step
    sampling: SamplingConfig | None = None  # exact sampling from the model's processed distribution

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.typical is not None and self.sampling is not None:
            raise ValueError("choose one of typical acceptance and exact sampling")

    @property
    def mode(self) -> str:
        return "exact" if self.sampling else "typical" if self.typical else "greedy"

    def settings(self) -> dict:
        return (
            {
                "max_new_tokens": self.max_new_tokens,
                "mode": self.mode,
                "seed": self.seed,
                "lookup_tokens": self.lookup.tokens if self.lookup else 0,
            }
            | (asdict(self.typical) if self.typical else {})
            | (asdict(self.sampling) if self.sampling else {})
            | (
                {"lookup_max_ngram": self.lookup.max_ngram, "lookup_min_ngram": self.lookup.min_ngram}
                if self.lookup
                else {}
            )
        )


def to_host(*tensors: torch.Tensor) -> list[list[float]]:
    """One device-to-host transfer for several small tensors: each flattened, as floats (token ids
    below 2**53 are exact)."""
    flat = [t.reshape(-1).to(torch.float64) for t in tensors]
    values = torch.cat(flat).tolist()
    out, at = [], 0
    for t in flat:
        out.append(values[at : at + t.numel()])
        at += t.numel()
    return out


@dataclass(frozen=True)
class _State:
    """Where decoding stands (host-side): cache length, the pending root and the heads' top-k there."""

    prefix_len: int
    root: int
    root_prob: float
    head_tokens: list[list[int]]  # [D][k]
    head_probs: list[list[float]]  # [D][k]


def head_topk(
    head_logits: torch.Tensor, top_k: int, proposal: ProposalVocab | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """[K, U] -> top-k token ids [K, k] and their probabilities [K, k]."""
    probs = torch.softmax(head_logits.float(), dim=-1)
    top = torch.topk(probs, top_k, dim=-1)
    tokens = top.indices if proposal is None else proposal.tokens[top.indices]
    return tokens, top.values


def heads_logits(medusa: MedusaModel, hidden: torch.Tensor, num_heads: int | None = None) -> torch.Tensor:
    """The first `num_heads` (default all) heads' logits [K, ..., U] over their proposal
    vocabulary (U = V without one)."""
    if medusa.proposal is None:
        return medusa.heads(hidden, medusa.base.model.get_output_embeddings(), num_heads)
    return medusa.proposal.logits(medusa.heads.head_states(hidden, num_heads))


def propose_logits(medusa: MedusaModel, hidden: torch.Tensor, depth: int) -> torch.Tensor:
    """Logits [D, U] of the heads a tree of this depth uses: a shallow tree skips the deep
    heads' projections, a visible share of a CPU step; none for the empty tree (plain greedy)."""
    if depth == 0:
        return hidden.new_empty(0, 0)
    return heads_logits(medusa, hidden, depth)


def next_root(
    logits: torch.Tensor, config: DecodeConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The base model's own next token at the last accepted node and its probability (device)."""
    if config.sampling is not None:
        probs = processed_probs(logits, config.sampling)  # [V]
        token = draw(probs[None], generator)[0].to(logits.device)
        return token, probs[token]
    probs = torch.softmax(logits.float(), dim=-1)  # [V]
    if config.typical is None:
        token = logits.argmax()
    else:
        token = torch.tensor(sample_typical(logits, config.typical, generator), device=logits.device)
    return token, probs[token]


def stop_in(tokens: Sequence[int], eos: frozenset[int], budget: int) -> tuple[list[int], str | None]:
    """Cut emitted tokens at the first EOS (kept) or at the token budget."""
    out: list[int] = []
    for tok in tokens:
        if len(out) == budget:
            return out, "max_new_tokens"
        out.append(tok)
        if tok in eos:
            return out, "eos"
    return out, ("max_new_tokens" if len(out) == budget else None)


def trace_nodes(medusa: MedusaModel, tree: MergedTree, buffers: TreeBuffers, with_text: bool) -> list[Node]:
    texts = medusa.base.tokenizer.batch_decode([[i] for i in tree.tokens]) if with_text else [""] * len(tree.tokens)
    return [
        Node(t, text, d, r, p, par, src)
        for t, text, d, r, p, par, src in zip(
            tree.tokens, texts, buffers.depths, tree.ranks, tree.probs, tree.parents, tree.sources
        )
    ]


def check_prompt_fits(prompt_len: int, context: int, tree_depth: int) -> None:
    if prompt_len == 0:
        raise PromptTooLongError("the prompt is empty")
    if prompt_len + tree_depth + 1 > context:
        raise PromptTooLongError(
            f"the prompt has {prompt_len} tokens but the model's context is {context} "
            f"(a step needs room for {tree_depth + 1} more)"
        )


class Layouts:
    """Tree layouts by shape, built once per distinct shape on the decoding device."""

    def __init__(self, paths: tuple[Path_, ...], device: torch.device) -> None:
        self.paths, self.device = paths, device
        self.by_parents: dict[tuple[int, ...], TreeBuffers] = {}

    def __call__(self, parents: tuple[int, ...]) -> TreeBuffers:
        if parents not in self.by_parents:
            self.by_parents[parents] = layout_from_parents(self.paths, parents).to(self.device)
        return self.by_parents[parents]


@torch.inference_mode()  # a decorated generator re-enters the mode on every resume, on any thread
def stream_generation(
    medusa: MedusaModel,
    prompt: str,
    tree: Sequence[Sequence[int]] | None = None,
    config: DecodeConfig = DecodeConfig(),
    prompt_ids: Sequence[int] | None = None,
) -> Iterator[StepRecord | GenerationRecord]:
    """Yield a StepRecord per decoding step, then the GenerationRecord with the totals."""
    base = medusa.base
    paths = validate_tree(medusa.default_tree if tree is None else tree, medusa.num_heads)
    drafters = drafters_for(paths, config.lookup)
    heads_depth, top_k = tree_depth(paths), tree_top_k(paths)
    max_depth = max(heads_depth, config.lookup.tokens if config.lookup else 0)
    ids = list(prompt_ids) if prompt_ids is not None else encode_prompt(base.tokenizer, prompt, config.chat)
    check_prompt_fits(len(ids), base.context_length, max_depth)
    if medusa.proposal is not None and top_k > medusa.proposal.size:
        raise ValueError(
            f"the tree needs each head's top {top_k} but the heads propose from only {medusa.proposal.size} tokens"
        )
    generator = torch.Generator().manual_seed(config.seed)
    layouts = Layouts(paths, base.device)

    def read_next(
        hidden_last: torch.Tensor, root_logits: torch.Tensor | None, prefix_len: int, drawn: tuple[int, float] | None = None
    ) -> _State:
        """The next root (chosen from root_logits, or already drawn by the exact walk) and the
        heads' top-k at the last accepted position: one transfer."""
        if drawn is None:
            root, root_prob = next_root(root_logits, config, generator)
        else:
            root = torch.tensor(drawn[0], device=hidden_last.device)
            root_prob = torch.tensor(drawn[1], device=hidden_last.device)
        if heads_depth:
            tokens, probs = head_topk(propose_logits(medusa, hidden_last, heads_depth), top_k, medusa.proposal)
        else:
            tokens = probs = root_prob.new_empty(0)
        root_h, prob_h, tokens_h, probs_h = to_host(root, root_prob, tokens, probs)
        rows = [tokens_h[i : i + top_k] for i in range(0, len(tokens_h), top_k)] if heads_depth else []
        prob_rows = [probs_h[i : i + top_k] for i in range(0, len(probs_h), top_k)] if heads_depth else []
        return _State(prefix_len, int(root_h[0]), prob_h[0], [[int(t) for t in r] for r in rows], prob_rows)

    synchronize(base.device)
    start = time.perf_counter()
    cache, hidden = prefill(base.model, torch.tensor(ids, device=base.device))
    state = read_next(hidden, final_logits(base.model, hidden), len(ids))
    in_cache = list(ids)  # token ids whose KV entries the cache holds
    out: list[int] = []
    steps: list[StepRecord] = []
    stop = None
    step_start = start
    while stop is None:
        if state.prefix_len + max_depth + 1 > base.context_length:
            stop = "context"
            break
        ctx = DraftContext(in_cache + [state.root], state.head_tokens, state.head_probs)
        merged = merge_drafts(state.root, state.root_prob, [d.draft(ctx) for d in drafters])
        buffers = layouts(merged.parents)
        node_tokens = torch.tensor(merged.tokens, device=base.device)  # [N]
        hidden = verify_tree(base.model, cache, node_tokens, buffers, state.prefix_len)  # [N, d]
        internal_logits = final_logits(
            base.model, hidden[buffers.internal]
        )  # [I, V]: big trees' leaves are rarely needed
        drawn_tokens = None
        if config.sampling is not None:
            walk = accept_exact(merged.tokens, buffers, internal_logits, lambda n: final_logits(base.model, hidden[n]),
                                config.sampling, generator)
            accepted, drawn_tokens = walk.accepted, walk.drawn
            next_state = read_next(hidden[accepted[-1]], None, state.prefix_len + len(accepted), (walk.next_token, walk.next_prob))
        else:
            if config.typical is None:
                path, length = accept_greedy(node_tokens, internal_logits, buffers)
            else:
                path, length = accept_typical(node_tokens, internal_logits, buffers, config.typical)
            path_h, length_h = to_host(path, length)
            accepted = [int(i) for i in path_h[: int(length_h[0])]]
            last = accepted[-1]
            row = buffers.internal_row[last]
            root_logits = internal_logits[row] if row >= 0 else final_logits(base.model, hidden[last])
            next_state = read_next(hidden[last], root_logits, state.prefix_len + len(accepted))
        commit_kv(cache, state.prefix_len, accepted)
        accepted_tokens = [merged.tokens[i] for i in accepted]
        in_cache.extend(accepted_tokens)
        emitted, stop = stop_in(accepted_tokens, base.eos_token_ids, config.max_new_tokens - len(out))
        out.extend(emitted)
        state = next_state
        now = time.perf_counter()  # the transfer above waited for the device: no sync needed
        step = StepRecord(
            trace_nodes(medusa, merged, buffers, config.trace_text), accepted, emitted, now - step_start, drawn_tokens
        )
        step_start = now
        steps.append(step)
        yield step
    seconds = time.perf_counter() - start
    yield GenerationRecord(
        model=base.name,
        heads=medusa.heads_name,
        device=str(base.device),
        dtype=str(base.dtype).removeprefix("torch."),
        tree=[list(p) for p in paths],
        settings=config.settings(),
        prompt=prompt,
        prompt_tokens=ids,
        tokens=out,
        text=base.tokenizer.decode(out, skip_special_tokens=True),
        steps=steps,
        seconds=seconds,
        stop_reason=stop or "context",
    )


def generate(
    medusa: MedusaModel,
    prompt: str,
    tree: Sequence[Sequence[int]] | None = None,
    config: DecodeConfig = DecodeConfig(),
    prompt_ids: Sequence[int] | None = None,
) -> GenerationRecord:
    *_, record = stream_generation(medusa, prompt, tree, config, prompt_ids)
    assert isinstance(record, GenerationRecord)
    return record
