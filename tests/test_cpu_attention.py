"""On the CPU, transformers' own masked-GQA switch shares key/value heads under tree masks and
computes what the repeating "sdpa" attention computes."""

import pytest
import torch
from torch.nn import functional as F

from medusa_core.accel.cpu_gqa import FORCE_GQA, use_masked_gqa
from medusa_core.engine.buffers import build_tree_buffers
from medusa_core.engine.verify import prefill, verify_tree
from medusa_core.spec.trees import full_tree
from tiny_models import VOCAB, tiny_causal_lm


@pytest.fixture
def sdpa_calls(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention

    def spy(query, key, value, **kwargs):
        calls.append((query.shape[1], key.shape[1], bool(kwargs.get("enable_gqa"))))
        return real(query, key, value, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    return calls


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tree_pass_with_the_switch_matches_the_repeat_and_shares_heads(arch, sdpa_calls, monkeypatch):
    model = tiny_causal_lm(arch)
    prompt = torch.randint(1, VOCAB, (13,), generator=torch.Generator().manual_seed(1))
    buffers = build_tree_buffers(full_tree(2, 3), lookup=3)
    tokens = torch.randint(1, VOCAB, (buffers.num_nodes,), generator=torch.Generator().manual_seed(2))
    hidden, calls = {}, {}
    with torch.inference_mode():
        for switch in ("0", "1"):
            monkeypatch.setenv(FORCE_GQA, switch)
            sdpa_calls.clear()
            cache, _ = prefill(model, prompt)
            sdpa_calls.clear()  # the tree pass's calls only
            hidden[switch] = verify_tree(model, cache, tokens, buffers, len(prompt))
            calls[switch] = list(sdpa_calls)
    torch.testing.assert_close(hidden["1"], hidden["0"], rtol=1e-5, atol=1e-5)
    assert calls["0"] and all(call == (4, 4, False) for call in calls["0"])  # keys and values repeated
    assert calls["1"] and all(call == (4, 2, True) for call in calls["1"])  # 2 key/value heads shared by 4


def test_the_switch_keeps_a_users_own_setting(monkeypatch):
    monkeypatch.setenv(FORCE_GQA, "0")
    assert use_masked_gqa() is False
    monkeypatch.delenv(FORCE_GQA)
    assert use_masked_gqa() is True
