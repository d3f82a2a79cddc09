"""Where two generations part, and whether the base model was near a tie there.

Greedy Medusa is exact in fp32. In bf16/fp16 a tree pass adds up its attention and matmuls in a
different order than a one-token pass, so where the top two logits are closer than the format's
rounding, the argmax can flip and the outputs part. This says where, and how close the call was,
instead of hiding it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from medusa_core.engine.verify import forward_hidden, new_cache
from medusa_core.modeling.logits import final_logits
from medusa_core.modeling.models import BaseModel

# A margin within this many units of rounding at the logits' scale is a near-tie.
TIE_ULPS = 8


def first_mismatch(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first differing token (or the shorter length); None when identical."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


@dataclass(frozen=True)
class Divergence:
    index: int  # first generated position where the two differ
    ours: int | None  # token there (None: that side ended)
    reference: int | None
    margin: float  # the reference pass's top-1 minus top-2 logit at that position
    tie_margin: float  # what counts as a near-tie in the model's dtype at that logit scale

    @property
    def near_tie(self) -> bool:
        return self.margin <= self.tie_margin

    def describe(self) -> str:
        kind = "a near-tie" if self.near_tie else "not a near-tie"
        return (
            f"first difference at generated token {self.index + 1}: top-2 logit margin {self.margin:.3g} "
            f"({kind}; rounding at this scale is about {self.tie_margin / TIE_ULPS:.2g})"
        )


@torch.inference_mode()
def first_divergence(
    base: BaseModel, prompt_ids: Sequence[int], ours: Sequence[int], reference: Sequence[int]
) -> Divergence | None:
    """None when the generations agree; else where they part and the model's top-2 margin there,
    from one plain pass over the prompt and the common prefix in the model's own dtype."""
    i = first_mismatch(ours, reference)
    if i is None:
        return None
    ids = torch.tensor(list(prompt_ids) + list(reference[:i]), device=base.device)
    hidden = forward_hidden(base.model, ids[None], new_cache(), torch.arange(ids.shape[0], device=base.device)[None])
    top = final_logits(base.model, hidden[-1]).float().topk(2).values  # [2]
    tie = TIE_ULPS * torch.finfo(base.dtype).eps * float(top[0].abs().clamp(min=1.0))
    at = lambda seq: int(seq[i]) if i < len(seq) else None  # noqa: E731
    return Divergence(i, at(ours), at(reference), float(top[0] - top[1]), tie)
