"""Grouped-query attention under masks on the CPU, through transformers' own switch.

transformers' "sdpa" attention lets PyTorch's kernel share key/value heads between query heads
only when there is no mask; with one, as in every tree verification pass, it first repeats keys
and values per query head, copying the whole cache in every layer. PyTorch's CPU kernel takes a
mask with `enable_gqa=True`, and transformers turns that on for every call when
TRANSFORMERS_SDPA_FORCE_GQA=1. Measured on SmolLM2-135M (a 16-node tree over a 300-token cache,
one thread): the same hidden states bit for bit as our former copy of this attention, as fast,
and faster than the repeat (benchmarks/README.md). The switch is process-wide and read on every
call; a user's own setting of it is kept.
"""

from __future__ import annotations

import os

FORCE_GQA = "TRANSFORMERS_SDPA_FORCE_GQA"


def use_masked_gqa() -> bool:
    """Turn transformers' masked-GQA switch on unless the user set it; True when it is on."""
    os.environ.setdefault(FORCE_GQA, "1")
    return os.environ[FORCE_GQA] == "1"
