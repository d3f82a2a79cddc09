"""Exact sampling on Medusa trees: the joint distribution of the first tokens equals the model's own
(statistical test, and a biased sampler fails it), the greedy limit, seeds; logits processing;
typical acceptance's thresholds and choice on hand-made logits."""

import math
from collections import Counter

import pytest
import torch

from medusa_core.engine import step
from medusa_core.engine.acceptance import TypicalConfig, accept_typical
from medusa_core.engine.buffers import build_tree_buffers
from medusa_core.engine.loop import DecodeConfig, generate, generate_batch
from medusa_core.engine.sampling import SamplingConfig, Walk, draw, processed_probs
from medusa_core.spec.lookup import LookupConfig
from medusa_core.spec.trees import full_tree
from tiny_models import ReferenceHeads, greedy_reference, medusa_of, random_heads, tiny_base

PROMPT = [3, 1, 4, 1, 5, 3, 1, 4]  # repeats itself: the lookup finds matches
SAMPLING = SamplingConfig(temperature=1.0, top_k=4)  # 4^3 outcomes for the first three tokens


def exact_joint(base, prompt, config: SamplingConfig, n: int = 3) -> dict[tuple[int, ...], float]:
    """P(first n tokens) from the model's own processed distributions, one prefix at a time."""
    joint = {(): 1.0}
    with torch.no_grad():
        for _ in range(n):
            nxt = {}
            for prefix, p in joint.items():
                logits = base.model(torch.tensor([prompt + list(prefix)])).logits[0, -1]
                probs = processed_probs(logits, config)
                for tok in torch.nonzero(probs).flatten().tolist():
                    nxt[prefix + (tok,)] = p * float(probs[tok])
            joint = nxt
    return joint


def chi_square_p(observed: Counter, expected: dict, total: int) -> float:
    """Pearson's chi-square over outcomes expected >= 5 times (the rest pooled into one bin);
    p-value by the Wilson-Hilferty approximation of the chi-square tail."""
    big = {k: p * total for k, p in expected.items() if p * total >= 5}
    rest_expected = total - sum(big.values())
    rest_observed = total - sum(observed[k] for k in big)
    stat = sum((observed[k] - e) ** 2 / e for k, e in big.items())
    bins = len(big)
    if rest_expected >= 5:
        stat += (rest_observed - rest_expected) ** 2 / rest_expected
        bins += 1
    elif rest_observed > 0:
        stat = math.inf  # outcomes the model all but never produces
    dof = bins - 1
    z = ((stat / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2))


def sample_first_tokens(medusa, tree, runs: int, lookup: LookupConfig | None, batch: int = 500) -> Counter:
    """The first 3 tokens of `runs` independent generations (seeds 0..runs-1), decoded as batches
    of rows that each draw from their own generator."""
    counts = Counter()
    config = DecodeConfig(3, sampling=SAMPLING, trace_text=False, lookup=lookup)
    for start in range(0, runs, batch):
        seeds = list(range(start, min(runs, start + batch)))
        records = generate_batch(medusa, [""] * len(seeds), tree, config, prompt_ids=[PROMPT] * len(seeds), seeds=seeds)
        counts.update(tuple(r.tokens) for r in records)
    return counts


def oracle_heads(base):
    """Heads that propose the model's greedy continuation: right whenever the draw is the top token."""
    return ReferenceHeads(base, PROMPT, greedy_reference(base, PROMPT, 8), 4, right=True)


@pytest.mark.parametrize(
    "arch, heads, tree",
    [("llama", "random", full_tree(2, 3)), ("qwen2", "oracle", full_tree(3, 2))],
    ids=["llama-random-heads", "qwen2-oracle-heads"],
)
def test_exact_sampling_has_the_models_joint_distribution(arch, heads, tree):
    base = tiny_base(arch)
    medusa = medusa_of(base, random_heads(4, 0) if heads == "random" else oracle_heads(base))
    runs = 10_000
    counts = sample_first_tokens(medusa, tree, runs, LookupConfig(3, 2, 1))
    assert chi_square_p(counts, exact_joint(base, PROMPT, SAMPLING), runs) > 0.001


def biased_walk(node_tokens, buffers, internal_logits, leaf_logits, config, generator) -> Walk:
    """Medusa's old "nucleus" idea: check every candidate path with its own draws, keep the longest."""
    probs = processed_probs(internal_logits, config).cpu()
    best: list[int] = [0]
    for row in buffers.retrieve.tolist():
        path = [0]
        for node in row[1:]:
            if node < 0 or int(draw(probs[buffers.internal_row[path[-1]]][None], generator)[0]) != node_tokens[node]:
                break
            path.append(node)
        best = max(best, path, key=len)
    row = buffers.internal_row[best[-1]]
    p = probs[row] if row >= 0 else processed_probs(leaf_logits(best[-1]), config).cpu()
    y = int(draw(p[None], generator)[0])
    return Walk(best, y, float(p[y]), [y])


def test_a_biased_sampler_fails_the_same_test(monkeypatch):
    base = tiny_base("llama")
    medusa = medusa_of(base, oracle_heads(base))
    monkeypatch.setattr(step, "accept_exact", biased_walk)
    runs = 2_000
    counts = sample_first_tokens(medusa, full_tree(3, 2), runs, None)
    assert chi_square_p(counts, exact_joint(base, PROMPT, SAMPLING), runs) < 0.001


def test_near_zero_temperature_is_greedy_and_seeds_reproduce():
    base = tiny_base("llama", seed=1)
    medusa = medusa_of(base, random_heads(4, 0))
    cold = DecodeConfig(30, sampling=SamplingConfig(1e-4), lookup=LookupConfig(3, 2, 1))
    assert generate(medusa, "", full_tree(2, 3), cold, prompt_ids=PROMPT).tokens == greedy_reference(base, PROMPT, 30)
    warm = [DecodeConfig(30, sampling=SamplingConfig(1.0), seed=s) for s in (1, 1, 2)]
    a, b, c = (generate(medusa, "", full_tree(2, 3), cfg, prompt_ids=PROMPT) for cfg in warm)
    assert a.tokens == b.tokens != c.tokens
    assert a.settings["mode"] == "exact" and a.settings["temperature"] == 1.0
    for step in a.steps:  # every visited node's draw is traced; all but the last matched a child
        assert len(step.drawn) == len(step.accepted)
        assert step.drawn[:-1] == [step.nodes[i].token_id for i in step.accepted[1:]]


def test_logits_processing_applies_temperature_top_k_and_top_p():
    logits = torch.log(torch.tensor([0.5, 0.25, 0.15, 0.1]))
    torch.testing.assert_close(processed_probs(logits, SamplingConfig(1.0)), torch.tensor([0.5, 0.25, 0.15, 0.1]))
    assert processed_probs(logits, SamplingConfig(1.0, top_k=2)).tolist() == pytest.approx([2 / 3, 1 / 3, 0, 0])
    # top-p 0.7: the smallest set with mass >= 0.7 is {0.5, 0.25}
    assert processed_probs(logits, SamplingConfig(1.0, top_p=0.7)).tolist() == pytest.approx([2 / 3, 1 / 3, 0, 0])
    hot = processed_probs(logits, SamplingConfig(2.0))
    assert hot[0] < 0.5 and hot[3] > 0.1


@pytest.mark.parametrize("kwargs", [dict(temperature=0), dict(temperature=-1), dict(top_p=0), dict(top_p=1.5), dict(top_k=-1)])
def test_bad_sampling_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        SamplingConfig(**kwargs)


def test_typical_and_exact_cannot_both_be_on():
    with pytest.raises(ValueError, match="one of"):
        DecodeConfig(sampling=SamplingConfig(), typical=TypicalConfig())


def test_typical_thresholds_and_the_most_likely_of_the_longest():
    """Tree [0], [1], [0, 0], [1, 0]: nodes 1-4 with tokens 1, 2, 3, 4 under root token 0."""
    buffers = build_tree_buffers([[0], [1], [0, 0], [1, 0]])  # internal rows: root, node 1, node 2
    tokens = torch.tensor([0, 1, 2, 3, 4])
    vocab = 8

    def logits_for(rows):
        return torch.log(torch.tensor([[r.get(t, 1e-6) for t in range(vocab)] for r in rows]))

    config = TypicalConfig(temperature=1.0, posterior_threshold=0.09, posterior_alpha=0.3)
    # root: tokens 1 and 2 both clear the threshold (1/3 and 2/3); below them 3 and 4 clear it too
    both = logits_for([{1: 0.3, 2: 0.6}, {3: 0.45, 7: 0.55}, {4: 0.5, 5: 0.5}])
    path, length = accept_typical(tokens, both, buffers, config)
    assert int(length) == 3
    # equal length both ways: 1/3 * 0.45 = 0.15 (the first candidate) against 2/3 * 0.5 = 0.33
    assert path[: int(length)].tolist() == [0, 2, 4]
    # a token below min(epsilon, delta * exp(-H)) is refused: 0.05 < 0.09 at a confident parent
    low = logits_for([{1: 0.9, 2: 0.05}, {3: 0.05, 6: 0.9}, {4: 0.9}])
    path, length = accept_typical(tokens, low, buffers, config)
    assert path[: int(length)].tolist() == [0, 1]


def test_sampling_calibration_is_the_greedy_table_in_the_cold_limit_and_probabilities_when_warm():
    from medusa_core.training.calibration import head_ranks
    from medusa_core.training.sampling_calibration import acceptance_probabilities

    base = tiny_base("llama", seed=2)
    medusa = medusa_of(base, random_heads(4, 3))
    tokens = PROMPT + greedy_reference(base, PROMPT, 30)
    start = len(PROMPT) - 1
    ranks = head_ranks(medusa, tokens, start)  # [T, K]
    cold = acceptance_probabilities(medusa, tokens, start, SamplingConfig(1e-4), 5)  # [T, K, 5]
    hits = torch.stack([(ranks == r).float() for r in range(5)], dim=-1)  # [T, K, 5]
    torch.testing.assert_close(cold, hits, atol=1e-4, rtol=0)
    warm = acceptance_probabilities(medusa, tokens, start, SamplingConfig(1.0), 5)
    assert (warm.sum(-1) <= 1 + 1e-5).all() and (warm > 0).any() and not torch.equal(warm, hits)
