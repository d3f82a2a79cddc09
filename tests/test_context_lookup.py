"""Context lookup: the continuation search, its chain in the tree layout, and lossless decoding."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medusa_core.spec.lookup import LookupConfig, find_continuation
from medusa_core.engine.loop import DecodeConfig, generate
from medusa_core.engine.buffers import build_tree_buffers
from medusa_core.spec.trees import chain_tree
from test_lossless import BASES, prompts, trees
from tiny_models import ARCHS, ReferenceHeads, greedy_reference, medusa_of, random_heads


def test_latest_longest_match_wins():
    seq = [1, 2, 3, 9, 1, 2, 3, 7, 8, 5, 2, 3]
    # The suffix [2, 3] (n=2) last occurred at index 5; what followed it there is [7, 8, 5].
    assert find_continuation(seq, LookupConfig(tokens=3, max_ngram=2)) == [7, 8, 5]
    # With n=3 the suffix [5, 2, 3] never occurred before: falls back to n=2.
    assert find_continuation(seq, LookupConfig(tokens=3, max_ngram=3)) == [7, 8, 5]
    assert find_continuation(seq, LookupConfig(tokens=1, max_ngram=1, min_ngram=1)) == [7]
    assert find_continuation([4, 5, 6], LookupConfig(min_ngram=1)) == []
    assert find_continuation([4], LookupConfig(min_ngram=1)) == []
    # A match near the end yields fewer tokens than asked.
    assert find_continuation([6, 1, 6], LookupConfig(tokens=5, max_ngram=1, min_ngram=1)) == [1, 6]
    # Only one-token matches: nothing at the default min_ngram of 2.
    assert find_continuation([6, 1, 6], LookupConfig(tokens=5)) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [({"tokens": 0}, "tokens >= 1"), ({"min_ngram": 0}, "1 <= min_ngram"), ({"max_ngram": 2, "min_ngram": 3}, "<= max_ngram")],
)
def test_bad_lookup_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LookupConfig(**kwargs)


@settings(max_examples=200, deadline=None)
@given(
    seq=st.lists(st.integers(0, 4), min_size=1, max_size=40),
    tokens=st.integers(1, 6),
    ngrams=st.tuples(st.integers(1, 4), st.integers(1, 4)).map(sorted),
)
def test_continuation_follows_the_latest_occurrence_of_the_longest_suffix(seq, tokens, ngrams):
    min_ngram, max_ngram = ngrams
    got = find_continuation(seq, LookupConfig(tokens, max_ngram, min_ngram))
    matches = [
        (n, start)
        for n in range(min_ngram, min(max_ngram, len(seq) - 1) + 1)
        for start in range(len(seq) - n)
        if seq[start : start + n] == seq[len(seq) - n :]
    ]
    if not matches:
        assert got == []
        return
    n, start = max(matches)  # longest suffix first, then the latest start
    assert got == seq[start + n : start + n + tokens]
    assert 1 <= len(got) <= tokens


@settings(max_examples=40, deadline=None)
@given(tree=trees(num_heads=4, top_k=5, max_nodes=20), lookup=st.integers(0, 6))
def test_lookup_chain_hangs_under_the_root(tree, lookup):
    plain, b = build_tree_buffers(tree), build_tree_buffers(tree, lookup)
    first = plain.num_nodes
    assert b.num_nodes == first + lookup and b.num_head_nodes == first and b.lookup == lookup
    assert b.parent[:first].tolist() == plain.parent.tolist()
    assert b.parent[first:].tolist() == ([0] + list(range(first, first + lookup - 1)))[:lookup]
    assert b.depth[first:].tolist() == list(range(1, lookup + 1))
    assert b.max_depth == max(plain.max_depth, lookup)
    if lookup:
        # The chain is one root-to-leaf row of the retrieval table.
        assert [0] + list(range(first, first + lookup)) in [[i for i in row if i >= 0] for row in b.retrieve.tolist()]


@pytest.mark.parametrize("arch", ARCHS)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(), prompt=prompts, seed=st.integers(0, 3), tokens=st.integers(1, 6), max_ngram=st.integers(1, 3))
def test_heads_plus_lookup_equal_greedy(arch, tree, prompt, seed, tokens, max_ngram):
    base = BASES[arch]
    medusa = medusa_of(base, random_heads(4, seed))
    config = DecodeConfig(max_new_tokens=24, lookup=LookupConfig(tokens, max_ngram, min_ngram=1))
    record = generate(medusa, "", tree, config, prompt_ids=prompt)
    assert record.tokens == greedy_reference(base, prompt, 24)


def expected_lookup_steps(prompt: list[int], reference: list[int], config: LookupConfig) -> list[int]:
    """Tokens per step when only the lookup can be right: 1 + the drafted chain's correct prefix."""
    steps, pos = [], 0
    while pos < len(reference):
        drafted = find_continuation(prompt + reference[: pos + 1], config)
        right = 0
        while right < len(drafted) and pos + 1 + right < len(reference) and drafted[right] == reference[pos + 1 + right]:
            right += 1
        steps.append(1 + right)
        pos += 1 + right
    return steps


@pytest.mark.parametrize("arch", ARCHS)
def test_wrong_heads_with_lookup_accept_exactly_the_copied_prefix(arch):
    base = BASES[arch]
    prompt, n = [3, 1, 4, 1, 5, 9, 2, 6], 60
    reference = greedy_reference(base, prompt, n)
    medusa = medusa_of(base, ReferenceHeads(base, prompt, reference, 4, right=False))
    config = LookupConfig(tokens=4, max_ngram=2, min_ngram=1)
    record = generate(medusa, "", chain_tree(4), DecodeConfig(max_new_tokens=n, lookup=config), prompt_ids=prompt)
    assert record.tokens == reference
    assert [len(s.emitted) for s in record.steps] == expected_lookup_steps(prompt, reference, config)
    for step in record.steps:
        assert all(step.nodes[i].source == "lookup" for i in step.accepted[1:])
        assert step.nodes[0].source == "root"
    # Tiny random models fall into loops, so the lookup must have paid off somewhere.
    assert record.num_steps < n
