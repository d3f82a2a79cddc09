"""Batched decoding: every row is the base model's own greedy decoding of that prompt alone."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medusa_core.engine.acceptance import TypicalConfig
from medusa_core.engine.loop import DecodeConfig, generate, generate_batch, stream_rows
from medusa_core.spec.lookup import LookupConfig
from medusa_core.spec.trees import full_tree
from test_engine import CountHostReads
from tiny_models import ARCHS, WINDOWED_ARCHS, greedy_reference, medusa_of, prompts, random_heads, tiny_base, trees

LOOKUP = LookupConfig(tokens=4, max_ngram=2, min_ngram=1)


@pytest.mark.parametrize("arch", ARCHS + WINDOWED_ARCHS[:2])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tree=trees(),
    rows=st.lists(prompts, min_size=1, max_size=8),
    seed=st.integers(0, 3),
    n=st.integers(1, 24),
    lookup=st.booleans(),
    eos=st.integers(1, 63) | st.none(),
)
def test_every_row_equals_greedy_on_its_prompt_alone(arch, tree, rows, seed, n, lookup, eos):
    base = tiny_base(arch, eos=eos)
    medusa = medusa_of(base, random_heads(4, seed))
    config = DecodeConfig(max_new_tokens=n, trace_text=False, lookup=LOOKUP if lookup else None)
    records = generate_batch(medusa, [""] * len(rows), tree, config, prompt_ids=rows)
    for prompt, record in zip(rows, records):
        expected = greedy_reference(base, prompt, n)
        assert record.prompt_tokens == prompt
        assert record.tokens == expected
        assert record.stop_reason == ("eos" if eos is not None and expected[-1] == eos else "max_new_tokens")


def test_rows_that_stop_early_leave_the_batch():
    """A row that meets EOS at once takes one step; the others go on without it."""
    base = tiny_base("llama")
    first = greedy_reference(base, [5, 6], 1)[0]
    base = tiny_base("llama", eos=first)
    medusa = medusa_of(base, random_heads(4, 0))
    rows = [[5, 6], [7, 8, 9, 10, 11], [12]]
    steps = list(stream_rows(medusa, [""] * 3, full_tree(2, 2), DecodeConfig(20, trace_text=False), prompt_ids=rows))
    *batch_steps, records = steps
    assert records[0].tokens == [first] and records[0].num_steps == 1
    assert [list(s) for s in batch_steps[:1]] == [[0, 1, 2]]
    assert all(0 not in s for s in batch_steps[1:])
    for prompt, record in zip(rows[1:], records[1:]):
        assert record.tokens == greedy_reference(base, prompt, 20)
    assert records[0].seconds < records[1].seconds


def test_a_batch_of_one_is_the_single_prompt_decoder():
    base = tiny_base("qwen2")
    medusa = medusa_of(base, random_heads(4, 2))
    config = DecodeConfig(30, lookup=LOOKUP)
    single = generate(medusa, "", full_tree(3, 3), config, prompt_ids=[4, 4, 2, 9])
    [batched] = generate_batch(medusa, [""], full_tree(3, 3), config, prompt_ids=[[4, 4, 2, 9]])
    assert batched.tokens == single.tokens
    assert [s.accepted for s in batched.steps] == [s.accepted for s in single.steps]
    def node_tokens(record):
        return [[n.token_id for n in s.nodes] for s in record.steps]

    assert node_tokens(batched) == node_tokens(single)


@pytest.mark.parametrize("mode", ["typical", "exact"])
def test_sampled_rows_equal_their_own_runs_with_the_same_seeds(mode):
    from medusa_core.engine.sampling import SamplingConfig

    base = tiny_base("llama")
    medusa = medusa_of(base, random_heads(4, 1))
    kind = {"typical": {"typical": TypicalConfig(temperature=1.0)}, "exact": {"sampling": SamplingConfig(1.0)}}[mode]
    config = DecodeConfig(24, trace_text=False, **kind)
    rows = [[3, 1, 4], [1, 5, 9, 2, 6], [5]]
    batched = generate_batch(medusa, [""] * 3, full_tree(2, 3), config, prompt_ids=rows, seeds=[7, 8, 9])
    for prompt, seed, record in zip(rows, [7, 8, 9], batched):
        own = DecodeConfig(24, trace_text=False, seed=seed, **kind)
        alone = generate(medusa, "", full_tree(2, 3), own, prompt_ids=prompt)
        assert record.tokens == alone.tokens
    assert len({tuple(r.tokens) for r in generate_batch(medusa, [""] * 3, full_tree(2, 3), config, prompt_ids=[[5]] * 3,
                                                       seeds=[1, 2, 3])}) > 1


def test_a_batched_step_reads_the_device_at_most_twice():
    base = tiny_base("llama")
    medusa = medusa_of(base, random_heads(4, 1))
    counter = CountHostReads()
    rows = [[3, 1, 4, 1, 5], [9, 2], [6, 5, 3, 5, 8, 9, 7]]
    with counter:
        steps = list(stream_rows(medusa, [""] * 3, full_tree(2, 3), DecodeConfig(30, trace_text=False, lookup=LOOKUP),
                                 prompt_ids=rows))
    assert len(steps) - 1 > 10
    assert sum(counter.calls.values()) <= 2 * (len(steps) - 1) + 1, counter.calls


def test_bad_batches_are_refused():
    medusa = medusa_of(tiny_base("llama"), random_heads(4, 0))
    with pytest.raises(ValueError, match="no prompts"):
        generate_batch(medusa, [], None, DecodeConfig(4))
    with pytest.raises(ValueError, match="2 seeds for 1 prompts"):
        generate_batch(medusa, [""], None, DecodeConfig(4), prompt_ids=[[1]], seeds=[1, 2])


def test_steps_record_the_heads_lists_they_drafted_from():
    """The next step's root is the model's own choice after a step's accepted path; the step's
    heads' lists say whether the head had it and at which rank (the app's "why rejected")."""
    base = tiny_base("llama")
    medusa = medusa_of(base, random_heads(4, 3))
    record = generate(medusa, "", full_tree(3, 2), DecodeConfig(20, trace_text=False), prompt_ids=[1, 2, 3])
    for step, following in zip(record.steps, record.steps[1:]):
        assert len(step.head_topk) == 2 and all(len(row) == 3 for row in step.head_topk)
        depth = len(step.accepted) - 1
        heads_nodes = [n.token_id for n in step.nodes if n.depth == 1]
        assert heads_nodes == step.head_topk[0]  # depth 1 of a full tree is head 0's whole list
        if depth < 2:  # the model's choice after the path: a rank in head `depth`'s list or none
            choice = following.nodes[0].token_id
            children = [n.token_id for n in step.nodes if n.parent == step.accepted[-1]]
            assert choice not in children
