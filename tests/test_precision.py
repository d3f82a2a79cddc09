"""Honest precision: exact in fp32; in bf16 a tree pass may part from plain greedy, at near-ties only."""

import torch

from medusa_core.engine.loop import DecodeConfig, generate
from medusa_core.engine.precision import first_divergence
from medusa_core.modeling.models import BaseModel
from medusa_core.spec.trees import preset_tree
from tiny_models import VOCAB, greedy_reference, medusa_of, random_heads, tiny_base


def runs(dtype: torch.dtype):
    """(base, prompt, Medusa tokens, plain greedy tokens) over a few random prompts and two families."""
    for arch in ("llama", "mistral"):
        tiny = tiny_base(arch)
        base = BaseModel(tiny.model.to(dtype), tiny.tokenizer, tiny.name, tiny.device, dtype)
        medusa = medusa_of(base, random_heads(4, 1).to(dtype))
        for seed in range(6):
            prompt = torch.randint(1, VOCAB, (8,), generator=torch.Generator().manual_seed(seed)).tolist()
            record = generate(medusa, "", preset_tree("mc_sim_7b_63"), DecodeConfig(40), prompt_ids=prompt)
            yield base, prompt, record.tokens, greedy_reference(base, prompt, 40)


def test_fp32_is_exact():
    assert all(first_divergence(*run) is None for run in runs(torch.float32))


def test_bf16_differences_are_near_ties_of_the_plain_pass():
    divergences = [d for d in (first_divergence(*run) for run in runs(torch.bfloat16)) if d is not None]
    assert divergences, "bf16 rounding never flipped a token on these prompts: the test shows nothing"
    for d in divergences:
        assert d.near_tie, d
        assert d.ours != d.reference and "near-tie" in d.describe()


def test_divergence_reports_the_plain_passs_top2_margin():
    base = tiny_base("llama")
    prompt, reference = [3, 1, 4], greedy_reference(base, [3, 1, 4], 6)
    ours = reference[:4] + [(reference[4] + 1) % VOCAB, 0]
    d = first_divergence(base, prompt, ours, reference)
    logits = base.model(torch.tensor([prompt + reference[:4]])).logits[0, -1]
    top = logits.topk(2).values
    assert d.index == 4 and d.reference == reference[4] and d.ours == ours[4]
    assert abs(d.margin - float(top[0] - top[1])) < 1e-5 and not d.near_tie
