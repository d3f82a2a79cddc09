"""Greedy Medusa decoding equals the base model's own greedy decoding, token for token."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medusa_core.accel.cpu_gqa import use_masked_gqa
from medusa_core.accel.cpu_matmul import use_few_rows_linears
from medusa_core.engine.loop import DecodeConfig, PromptTooLongError, generate
from medusa_core.spec.trees import chain_tree, full_tree, preset_tree, validate_tree
from tiny_models import (
    ALL_ARCHS, ARCHS, VOCAB, ReferenceHeads, greedy_reference, medusa_of, prompts, random_heads, tiny_base, trees,
)

BASES = {arch: tiny_base(arch) for arch in ALL_ARCHS}




@pytest.mark.parametrize("arch", ALL_ARCHS)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(), prompt=prompts, seed=st.integers(0, 3), n=st.integers(1, 24), root=st.booleans())
def test_random_heads_random_trees_equal_greedy(arch, tree, prompt, seed, n, root):
    """Plain Medusa heads and heads that read the pending root token alike."""
    base = BASES[arch]
    medusa = medusa_of(base, random_heads(4, seed, shared=seed % 2 == 0, root_token=root))
    record = generate(medusa, "", tree, DecodeConfig(max_new_tokens=n), prompt_ids=prompt)
    assert record.tokens == greedy_reference(base, prompt, n)
    assert len(record.tokens) == n
    assert record.stop_reason == "max_new_tokens"


@pytest.mark.parametrize("arch", ARCHS)
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(), prompt=prompts, seed=st.integers(0, 3))
def test_few_rows_linears_keep_decoding_lossless(arch, tree, prompt, seed):
    """As load_base_model sets CPU models up (few-rows linears, grouped-query SDPA under masks):
    baseline and Medusa both on the same set-up."""
    base = tiny_base(arch)
    use_few_rows_linears(base.model)
    use_masked_gqa()
    medusa = medusa_of(base, random_heads(4, seed))
    record = generate(medusa, "", tree, DecodeConfig(max_new_tokens=16), prompt_ids=prompt)
    assert record.tokens == greedy_reference(base, prompt, 16)


@pytest.mark.parametrize("arch", ALL_ARCHS)
@pytest.mark.parametrize("tree", [chain_tree(4), full_tree(2, 3), preset_tree("mc_sim_7b_63")], ids=["chain4", "full2x3", "mc_sim"])
def test_oracle_heads_accept_the_whole_depth(arch, tree):
    base = BASES[arch]
    prompt, n = [3, 1, 4, 1, 5], 30
    reference = greedy_reference(base, prompt, n)
    medusa = medusa_of(base, ReferenceHeads(base, prompt, reference, 4, right=True))
    record = generate(medusa, "", tree, DecodeConfig(max_new_tokens=n), prompt_ids=prompt)
    assert record.tokens == reference
    depth = max(len(p) for p in tree)
    per_step = [len(s.emitted) for s in record.steps]
    assert per_step[:-1] == [depth + 1] * (len(per_step) - 1)
    assert all(s.accepted_length == depth for s in record.steps[:-1])


@pytest.mark.parametrize("arch", ARCHS)
def test_wrong_heads_give_one_token_per_step(arch):
    base = BASES[arch]
    prompt, n = [2, 7, 1, 8], 20
    reference = greedy_reference(base, prompt, n)
    medusa = medusa_of(base, ReferenceHeads(base, prompt, reference, 4, right=False))
    record = generate(medusa, "", full_tree(3, 3), DecodeConfig(max_new_tokens=n), prompt_ids=prompt)
    assert record.tokens == reference
    assert record.num_steps == n
    assert all(len(s.emitted) == 1 and s.accepted == [0] for s in record.steps)


@pytest.mark.parametrize("arch", ARCHS)
def test_empty_tree_is_plain_greedy(arch):
    base = BASES[arch]
    record = generate(medusa_of(base, random_heads(4)), "", [], DecodeConfig(max_new_tokens=15), prompt_ids=[9, 9, 2])
    assert record.tokens == greedy_reference(base, [9, 9, 2], 15)
    assert record.num_steps == 15 and record.tree == []


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_eos_inside_an_accepted_path_stops_there(arch):
    prompt, n = [5, 6, 7], 30
    plain = tiny_base(arch)
    reference = greedy_reference(plain, prompt, n)
    eos = reference[7]  # step 2 of a depth-4 oracle emits reference[5:10]: EOS mid-path
    base = tiny_base(arch, eos=eos)
    expected = reference[: reference.index(eos) + 1]
    assert greedy_reference(base, prompt, n) == expected
    medusa = medusa_of(base, ReferenceHeads(base, prompt, reference, 4, right=True))
    record = generate(medusa, "", chain_tree(4), DecodeConfig(max_new_tokens=n), prompt_ids=prompt)
    assert record.tokens == expected
    assert record.stop_reason == "eos"


def test_prompt_longer_than_context_is_refused():
    base = tiny_base("llama", context=32)
    medusa = medusa_of(base, random_heads(4))
    with pytest.raises(PromptTooLongError, match="context is 32"):
        generate(medusa, "", chain_tree(4), DecodeConfig(max_new_tokens=4), prompt_ids=[1] * 40)
    with pytest.raises(PromptTooLongError, match="empty"):
        generate(medusa, "", chain_tree(4), DecodeConfig(max_new_tokens=4), prompt_ids=[])


def test_generation_stops_at_the_context_end():
    base = tiny_base("llama", context=32)
    medusa = medusa_of(base, random_heads(4))
    record = generate(medusa, "", chain_tree(4), DecodeConfig(max_new_tokens=100), prompt_ids=[1] * 20)
    assert record.stop_reason == "context"
    assert 20 + len(record.tokens) <= 32
    assert record.tokens == greedy_reference(base, [1] * 20, len(record.tokens))


def test_trace_records_match_the_tree_and_serialise():
    import json

    base = BASES["llama"]
    tree = full_tree(2, 2)
    record = generate(medusa_of(base, random_heads(2)), "", tree, DecodeConfig(max_new_tokens=10), prompt_ids=[1, 2, 3])
    data = json.loads(json.dumps(record.to_json()))
    for key in ("format", "model", "heads", "device", "dtype", "tree", "settings", "prompt", "prompt_tokens", "tokens", "text", "steps", "num_steps", "tokens_per_step", "tokens_per_second", "seconds"):
        assert key in data
    assert data["format"] == "medusa-generation/1"
    step = data["steps"][0]
    assert len(step["nodes"]) == len(tree) + 1
    assert step["nodes"][0]["depth"] == 0 and step["nodes"][0]["parent"] == -1
    assert [n["depth"] for n in step["nodes"]] == [0, 1, 1, 2, 2, 2, 2]
    assert all(0 <= n["prob"] <= 1 for n in step["nodes"])
    emitted = [t for s in data["steps"] for t in s["emitted"]]
    assert emitted == data["tokens"]
    for s in data["steps"]:
        assert s["accepted"][0] == 0 and s["emitted"] == [s["nodes"][i]["token_id"] for i in s["accepted"]][: len(s["emitted"])]
    assert data["tokens_per_step"] == pytest.approx(len(data["tokens"]) / data["num_steps"])
