"""The CPU's grouped-query SDPA computes what transformers' "sdpa" attention computes, over a
cache and under a tree mask, without repeating keys and values."""

import copy

import pytest
import torch
from torch.nn import functional as F

from transformers.integrations.sdpa_attention import sdpa_attention_forward

from medusa_core.accel.cpu_attention import GQA_SDPA, gqa_sdpa_attention, use_gqa_sdpa
from medusa_core.engine.verify import prefill, verify_tree
from medusa_core.engine.buffers import build_tree_buffers
from medusa_core.spec.trees import full_tree
from tiny_models import VOCAB, tiny_causal_lm


@pytest.fixture
def sdpa_calls(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention

    def spy(query, key, value, **kwargs):
        calls.append((query.shape[1], key.shape[1], kwargs.get("enable_gqa")))
        return real(query, key, value, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    return calls


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tree_pass_over_cache_matches_sdpa(arch, sdpa_calls):
    plain = tiny_causal_lm(arch)
    fast = use_gqa_sdpa(copy.deepcopy(plain))
    assert fast.config._attn_implementation == GQA_SDPA
    prompt = torch.randint(1, VOCAB, (13,), generator=torch.Generator().manual_seed(1))
    buffers = build_tree_buffers(full_tree(2, 3), lookup=3)
    tokens = torch.randint(1, VOCAB, (buffers.num_nodes,), generator=torch.Generator().manual_seed(2))
    hidden = {}
    with torch.inference_mode():
        for name, model in [("plain", plain), ("fast", fast)]:
            sdpa_calls.clear()  # the spy sees every model's calls: keep the fast model's
            cache, last = prefill(model, prompt)
            hidden[name] = (last, verify_tree(model, cache, tokens, buffers, len(prompt)))
    torch.testing.assert_close(hidden["fast"], hidden["plain"], rtol=1e-5, atol=1e-5)
    # 4 query heads share 2 key/value heads, and the kernel handles the sharing (no repeat)
    assert sdpa_calls and all(call == (4, 2, True) for call in sdpa_calls)


def test_transformers_generation_unchanged():
    plain = tiny_causal_lm("llama")
    fast = use_gqa_sdpa(copy.deepcopy(plain))
    ids = torch.randint(1, VOCAB, (1, 20), generator=torch.Generator().manual_seed(3))
    for extra in ({}, {"prompt_lookup_num_tokens": 3}):
        want = plain.generate(ids, max_new_tokens=24, do_sample=False, **extra)
        assert torch.equal(fast.generate(ids, max_new_tokens=24, do_sample=False, **extra), want)


def test_other_attention_implementations_are_left_alone():
    model = tiny_causal_lm("llama")
    model.set_attn_implementation("eager")
    assert use_gqa_sdpa(model).config._attn_implementation == "eager"


def test_unmasked_and_special_calls_are_transformers_sdpa():
    gen = torch.Generator().manual_seed(4)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 2, True
    query, key, value = torch.randn(1, 4, 5, 8, generator=gen), torch.randn(1, 2, 5, 8, generator=gen), torch.randn(1, 2, 5, 8, generator=gen)
    ours, _ = gqa_sdpa_attention(module, query, key, value, None, scaling=0.3)
    theirs, _ = sdpa_attention_forward(module, query, key, value, None, scaling=0.3)
    assert torch.equal(ours, theirs)  # causal, no mask: handed over unchanged
    mask = torch.zeros(1, 1, 5, 5)
    with pytest.raises(ValueError, match="softcap"):
        gqa_sdpa_attention(module, query, key, value, mask, softcap=30.0)
    bias = torch.randn(1, 4, 5, 5, generator=gen)
    ours, _ = gqa_sdpa_attention(module, query, key, value, mask, position_bias=bias)
    theirs, _ = sdpa_attention_forward(module, query, key, value, mask, position_bias=bias)
    assert torch.equal(ours, theirs)
