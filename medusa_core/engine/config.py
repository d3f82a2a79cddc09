"""How one generation decodes: mode (greedy, typical, exact sampling), budget, lookup, seed."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from medusa_core.engine.acceptance import TypicalConfig
from medusa_core.engine.sampling import SamplingConfig
from medusa_core.spec.lookup import LookupConfig


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
