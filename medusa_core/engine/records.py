"""Step and generation records: the values decoding returns, serialisable to JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

GENERATION_FORMAT = "medusa-generation/1"


@dataclass(frozen=True)
class Node:
    token_id: int
    text: str
    depth: int
    rank: int  # rank in its head's top-k; -1 for the root and lookup nodes
    prob: float  # head probability of the token; the base model's for the root
    parent: int  # -1 for the root
    source: str = "heads"  # "root", "heads" or "lookup" (copied from the context; prob 0)


@dataclass(frozen=True)
class StepRecord:
    nodes: list[Node]
    accepted: list[int]  # node ids root -> last accepted node
    emitted: list[int]  # token ids this step added to the output
    seconds: float
    # exact sampling: the token drawn from the model at each visited node (the last one, which
    # matched no child, is the next step's root); None for greedy and typical acceptance
    drawn: list[int] | None = None
    # the heads' top-k token ids [D][k] this step drafted from (head d proposes depth d + 1): with
    # the next step's root (the model's own choice after the accepted path) it says whether that
    # choice was in the head's list at all, and at which rank
    head_topk: list[list[int]] | None = None

    @property
    def accepted_length(self) -> int:
        """Accepted candidate nodes, root excluded (tokens per step = this + 1)."""
        return len(self.accepted) - 1

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GenerationRecord:
    model: str
    heads: str
    device: str
    dtype: str
    tree: list[list[int]]
    settings: dict
    prompt: str
    prompt_tokens: list[int]
    tokens: list[int]
    text: str
    steps: list[StepRecord]
    seconds: float
    stop_reason: str  # "max_new_tokens" | "eos" | "context", or "stopped" (the app's Stop)
    format: str = field(default=GENERATION_FORMAT)

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def tokens_per_step(self) -> float:
        return len(self.tokens) / max(1, self.num_steps)

    @property
    def tokens_per_second(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(
            num_steps=self.num_steps,
            tokens_per_step=self.tokens_per_step,
            tokens_per_second=self.tokens_per_second,
        )
        return data
