"""The Medusa decoding loop: propose, verify in one pass, accept, commit, repeat; traced."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Iterator, Sequence

import torch

from medusa_core.engine.acceptance import TypicalConfig, accept_greedy, accept_typical, sample_typical
from medusa_core.spec.lookup import LookupConfig, find_continuation
from medusa_core.accel.cpu_matmul import MAX_ROWS
from medusa_core.modeling.device import synchronize
from medusa_core.modeling.models import MedusaModel, encode_prompt
from medusa_core.modeling.proposal_vocab import ProposalVocab
from medusa_core.engine.records import GenerationRecord, Node, StepRecord
from medusa_core.engine.verify import commit_kv, prefill, verify_tree
from medusa_core.engine.buffers import TreeBuffers, build_tree_buffers
from medusa_core.spec.trees import tree_top_k, validate_tree


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

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    def settings(self) -> dict:
        return {
            "max_new_tokens": self.max_new_tokens,
            "mode": "greedy" if self.typical is None else "typical",
            "seed": self.seed,
            "lookup_tokens": self.lookup.tokens if self.lookup else 0,
        } | (asdict(self.typical) if self.typical else {}) | (
            {"lookup_max_ngram": self.lookup.max_ngram, "lookup_min_ngram": self.lookup.min_ngram} if self.lookup else {}
        )


@dataclass
class _State:
    """Where decoding stands: cache length, the pending root and the heads' proposals for it."""

    prefix_len: int
    root: int
    root_prob: float
    head_logits: torch.Tensor  # [K, U] heads' logits at the last accepted position


def head_topk(head_logits: torch.Tensor, top_k: int, proposal: ProposalVocab | None) -> tuple[torch.Tensor, torch.Tensor]:
    """[K, U] -> top-k token ids [K, k] and their probabilities [K, k]."""
    probs = torch.softmax(head_logits.float(), dim=-1)
    top = torch.topk(probs, top_k, dim=-1)
    tokens = top.indices if proposal is None else proposal.tokens[top.indices]
    return tokens, top.values


def propose(
    state: _State, buffers: TreeBuffers, top_k: int, proposal: ProposalVocab | None, drafted: Sequence[int] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lay the tree's tokens out flat: node tokens [N] and their proposal probabilities [N]
    (root, the heads' nodes, then the `drafted` lookup chain, whose probability is 0: unknown)."""
    device = buffers.depth.device
    tokens = [torch.tensor([state.root], device=device)]
    probs = [torch.tensor([state.root_prob], device=device)]
    if buffers.num_head_nodes > 1:
        head_tokens, head_probs = head_topk(state.head_logits, top_k, proposal)  # [K, k]
        heads, ranks = buffers.head[1 : buffers.num_head_nodes], buffers.rank[1 : buffers.num_head_nodes]
        tokens.append(head_tokens[heads, ranks])
        probs.append(head_probs[heads, ranks])
    if buffers.lookup:
        tokens.append(torch.tensor(drafted[: buffers.lookup], device=device))
        probs.append(torch.zeros(buffers.lookup, device=device))
    return torch.cat(tokens), torch.cat(probs)


def heads_logits(medusa: MedusaModel, hidden: torch.Tensor, num_heads: int | None = None) -> torch.Tensor:
    """The first `num_heads` (default all) heads' logits [K, ..., U] over their proposal
    vocabulary (U = V without one)."""
    if medusa.proposal is None:
        return medusa.heads(hidden, medusa.base.model.get_output_embeddings(), num_heads)
    return medusa.proposal.logits(medusa.heads.head_states(hidden, num_heads))


def propose_logits(medusa: MedusaModel, hidden: torch.Tensor, heads_tree: TreeBuffers) -> torch.Tensor:
    """Logits [D, U] of the heads the tree uses (D = its depth): a shallow tree skips the deep
    heads' projections, a visible share of a CPU step; none for the empty tree (plain greedy)."""
    if heads_tree.num_nodes == 1:
        return hidden.new_empty(0, 0)
    return heads_logits(medusa, hidden, heads_tree.max_depth)


def logits_at(node: int, hidden: torch.Tensor, internal_logits: torch.Tensor, buffers: TreeBuffers, lm_head: torch.nn.Module) -> torch.Tensor:
    """Base logits [V] at a node: computed already for internal nodes, on demand for a leaf."""
    row = buffers.internal_row[node]
    return internal_logits[row] if row >= 0 else lm_head(hidden[node])


def next_root(logits: torch.Tensor, config: DecodeConfig, generator: torch.Generator) -> tuple[int, float]:
    """The base model's own next token at the last accepted node, and its probability."""
    probs = torch.softmax(logits.float(), dim=-1)
    token = int(logits.argmax()) if config.typical is None else sample_typical(logits, config.typical, generator)
    return token, float(probs[token])


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


def node_sources(buffers: TreeBuffers) -> list[str]:
    return ["root"] + ["heads"] * (buffers.num_head_nodes - 1) + ["lookup"] * buffers.lookup


def trace_nodes(medusa: MedusaModel, node_tokens: torch.Tensor, node_probs: torch.Tensor, buffers: TreeBuffers, with_text: bool) -> list[Node]:
    ids = node_tokens.tolist()
    texts = medusa.base.tokenizer.batch_decode([[i] for i in ids]) if with_text else [""] * len(ids)
    return [
        Node(i, t, d, r, p, par, src)
        for i, t, d, r, p, par, src in zip(
            ids,
            texts,
            buffers.depth.tolist(),
            buffers.rank.tolist(),
            node_probs.tolist(),
            buffers.parent.tolist(),
            node_sources(buffers),
        )
    ]


def step_buffers(paths: Sequence[Sequence[int]], lookup: int = 0) -> TreeBuffers:
    """A step's layout of the heads' tree and a lookup chain. Up to MAX_ROWS nodes the lm_head
    runs on all of them: a few rows cost what one does."""
    return build_tree_buffers(paths, lookup, all_logits=len(paths) + 1 + lookup <= MAX_ROWS)


def tree_layouts(paths: Sequence[Sequence[int]], lookup: LookupConfig | None, device: torch.device) -> list[TreeBuffers]:
    """The heads' tree with a lookup chain of every length the lookup can find: [0..tokens]."""
    lengths = range((lookup.tokens if lookup else 0) + 1)
    return [step_buffers(paths, n).to(device) for n in lengths]


def check_prompt_fits(prompt_len: int, context: int, tree_depth: int) -> None:
    if prompt_len == 0:
        raise PromptTooLongError("the prompt is empty")
    if prompt_len + tree_depth + 1 > context:
        raise PromptTooLongError(
            f"the prompt has {prompt_len} tokens but the model's context is {context} "
            f"(a step needs room for {tree_depth + 1} more)"
        )


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
    layouts = tree_layouts(paths, config.lookup, base.device)
    heads_only = layouts[0]
    max_depth = max(b.max_depth for b in layouts)
    top_k = tree_top_k(paths)
    ids = list(prompt_ids) if prompt_ids is not None else encode_prompt(base.tokenizer, prompt, config.chat)
    check_prompt_fits(len(ids), base.context_length, max_depth)
    if medusa.proposal is not None and top_k > medusa.proposal.size:
        raise ValueError(f"the tree needs each head's top {top_k} but the heads propose from only {medusa.proposal.size} tokens")
    generator = torch.Generator().manual_seed(config.seed)
    lm_head = base.model.get_output_embeddings()

    with torch.inference_mode():
        synchronize(base.device)
        start = time.perf_counter()
        cache, hidden = prefill(base.model, torch.tensor(ids, device=base.device))
        root, root_prob = next_root(lm_head(hidden), config, generator)
        state = _State(len(ids), root, root_prob, propose_logits(medusa, hidden, heads_only))
        in_cache = list(ids)  # token ids whose KV entries the cache holds
        out: list[int] = []
        steps: list[StepRecord] = []
        stop = None
        step_start = start
        while stop is None:
            if state.prefix_len + max_depth + 1 > base.context_length:
                stop = "context"
                break
            drafted = find_continuation(in_cache + [state.root], config.lookup) if config.lookup else []
            buffers = layouts[len(drafted)]
            node_tokens, node_probs = propose(state, buffers, top_k, medusa.proposal, drafted)
            hidden = verify_tree(base.model, cache, node_tokens, buffers, state.prefix_len)  # [N, d]
            internal_logits = lm_head(hidden[buffers.internal])  # [I, V]: big trees' leaves are rarely needed
            if config.typical is None:
                accepted = accept_greedy(node_tokens, internal_logits, buffers)
            else:
                accepted = accept_typical(node_tokens, internal_logits, buffers, config.typical)
            commit_kv(cache, state.prefix_len, accepted)
            last = int(accepted[-1])
            root, root_prob = next_root(logits_at(last, hidden, internal_logits, buffers, lm_head), config, generator)
            accepted_tokens = node_tokens[accepted].tolist()
            in_cache.extend(accepted_tokens)
            emitted, stop = stop_in(accepted_tokens, base.eos_token_ids, config.max_new_tokens - len(out))
            state = _State(state.prefix_len + len(accepted), root, root_prob, propose_logits(medusa, hidden[last], heads_only))
            out.extend(emitted)
            synchronize(base.device)
            now = time.perf_counter()
            step = StepRecord(
                trace_nodes(medusa, node_tokens, node_probs, buffers, config.trace_text),
                accepted.tolist(),
                emitted,
                now - step_start,
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
