"""The measuring side of ``optimizer tune``: medusa_core's decoder on the tuning prompts.

Importing this module imports no torch: medusa_core's model code loads inside
:func:`load_measurer`, so ``import optimizer`` stays light.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .tune import Measurement, Setup, TuneError

FACTORY_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
WARM_UP_TOKENS = 8


def is_factory_spec(model: str | None) -> bool:
    """``module:function`` (returning a MedusaModel) rather than a Hub id or a folder."""
    return model is not None and bool(FACTORY_SPEC.match(model)) and not Path(model).exists()


@dataclass
class DecoderMeasurer:
    """Greedy decoding of the encoded prompts, each setup's tree and lookup as given."""

    medusa: Any  # medusa_core.modeling.models.MedusaModel
    prompts: Sequence[str]
    prompt_ids: list[list[int]]
    max_new_tokens: int

    @property
    def num_prompts(self) -> int:
        return len(self.prompt_ids)

    @property
    def num_heads(self) -> int:
        return int(self.medusa.num_heads)

    @property
    def default_setup(self) -> Setup:
        return Setup(tuple(self.medusa.default_tree), self.medusa.default_lookup)

    def measure(self, setup: Setup, prompt: int) -> Measurement:
        from medusa_core.engine.loop import DecodeConfig, generate

        config = DecodeConfig(max_new_tokens=self.max_new_tokens, trace_text=False, lookup=setup.lookup)
        record = generate(self.medusa, self.prompts[prompt], setup.tree, config, self.prompt_ids[prompt])
        return Measurement(len(record.tokens), record.num_steps, record.seconds)

    def warm_up(self) -> None:
        """One short decode, so that the first trial pays no one-time costs (allocations, kernels)."""
        from medusa_core.engine.loop import DecodeConfig, generate

        config = DecodeConfig(max_new_tokens=min(WARM_UP_TOKENS, self.max_new_tokens), trace_text=False,
                              lookup=self.medusa.default_lookup)
        generate(self.medusa, self.prompts[0], self.medusa.default_tree, config, self.prompt_ids[0])

    def machine(self) -> dict[str, Any]:
        from medusa_core.bench.runner import machine_info

        return machine_info(self.medusa.base.device, self.medusa.base.dtype)


def load_model(model: str | None, heads: str | None, device: str, dtype: str) -> Any:
    """A MedusaModel: from a ``module:function`` factory, else ``load_medusa``."""
    if model is not None and is_factory_spec(model):
        module, _, function = model.partition(":")
        return getattr(importlib.import_module(module), function)()
    from medusa_core.modeling.models import load_medusa

    return load_medusa(model, heads, device, dtype)


def load_measurer(
    model: str | None, heads: str | None, device: str, dtype: str, prompts: Sequence[str], max_new_tokens: int,
    max_lookup_tokens: int,
) -> DecoderMeasurer:
    """Load the model, encode the prompts (refusing one that leaves no room for the answer) and warm up."""
    from medusa_core.bench.runner import encode_prompts

    medusa = load_model(model, heads, device, dtype)
    try:
        ids = encode_prompts(medusa.base, prompts, max_new_tokens, max(medusa.num_heads, max_lookup_tokens))
    except ValueError as err:
        raise TuneError(str(err)) from err
    measurer = DecoderMeasurer(medusa, prompts, ids, max_new_tokens)
    measurer.warm_up()
    return measurer
