"""Typical acceptance: seeded, reproducible, and the greedy limit at temperature -> 0."""

import pytest

from medusa_core.engine.acceptance import TypicalConfig
from medusa_core.engine.loop import DecodeConfig, generate
from medusa_core.spec.trees import full_tree
from tiny_models import greedy_reference, medusa_of, random_heads, tiny_base

BASE = tiny_base("llama", seed=1)
PROMPT = [4, 8, 15, 16]


def run(config):
    return generate(medusa_of(BASE, random_heads(3)), "", full_tree(3, 3), config, prompt_ids=PROMPT)


def test_same_seed_same_output_other_seed_differs():
    typical = TypicalConfig(temperature=1.5, posterior_threshold=0.09, posterior_alpha=0.3)
    a = run(DecodeConfig(max_new_tokens=40, typical=typical, seed=1))
    b = run(DecodeConfig(max_new_tokens=40, typical=typical, seed=1))
    c = run(DecodeConfig(max_new_tokens=40, typical=typical, seed=2))
    assert a.tokens == b.tokens
    assert a.tokens != c.tokens
    assert a.settings["mode"] == "typical" and a.settings["temperature"] == 1.5


def test_near_zero_temperature_is_greedy():
    record = run(DecodeConfig(max_new_tokens=30, typical=TypicalConfig(temperature=1e-4)))
    assert record.tokens == greedy_reference(BASE, PROMPT, 30)


@pytest.mark.parametrize("kwargs", [dict(temperature=0), dict(posterior_threshold=0), dict(posterior_alpha=1.5)])
def test_bad_typical_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        TypicalConfig(**kwargs)
