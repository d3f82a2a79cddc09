"""Context lookup: draft tokens copied from earlier in the sequence (prompt-lookup decoding).

Chat answers often repeat text from the prompt or from themselves (names, code, list items). The
heads cannot copy; a lookup can: find the latest earlier occurrence of the sequence's last n
tokens and propose what followed it. Its chain joins the heads' tree under the root, so one
verification pass checks both and the longest correct path wins; decoding stays lossless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class LookupConfig:
    """Draft `tokens` tokens from the latest match of the last n tokens, min_ngram <= n <= max_ngram.

    A one-token match is a weak guess that still costs a chain of verified rows; on chat answers
    two-token matches pay for their rows and one-token matches do not (benchmarks/README.md)."""

    tokens: int = 8
    max_ngram: int = 3
    min_ngram: int = 2

    def __post_init__(self) -> None:
        if self.tokens < 1:
            raise ValueError(f"context lookup needs tokens >= 1, got {self.tokens}")
        if not 1 <= self.min_ngram <= self.max_ngram:
            raise ValueError(f"context lookup needs 1 <= min_ngram <= max_ngram, got {self.min_ngram} and {self.max_ngram}")


def lookup_or_none(tokens: int, min_ngram: int = LookupConfig.min_ngram, max_ngram: int = LookupConfig.max_ngram) -> LookupConfig | None:
    """A lookup drafting `tokens` tokens; None (no lookup) for 0."""
    return LookupConfig(tokens, max_ngram, min_ngram) if tokens else None


def find_continuation(sequence: Sequence[int], config: LookupConfig) -> list[int]:
    """Up to `config.tokens` tokens that followed the latest earlier occurrence of the sequence's
    longest matching suffix (n from max_ngram down to min_ngram); [] when nothing matches."""
    total = len(sequence)
    for n in range(min(config.max_ngram, total - 1), config.min_ngram - 1, -1):
        suffix = list(sequence[total - n :])
        last = suffix[-1]
        # Latest occurrence first: recent text is the likeliest to repeat.
        for start in range(total - n - 1, -1, -1):
            if sequence[start + n - 1] == last and list(sequence[start : start + n]) == suffix:
                return list(sequence[start + n : start + n + config.tokens])
    return []
