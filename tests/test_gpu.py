"""CUDA checks (skipped without a GPU): lossless greedy on every family in fp32, near-tie-only
differences in bf16, batches lossless per row, and at most two host round trips per greedy step on
the device."""

import warnings

import pytest
import torch

from medusa_core.engine.loop import DecodeConfig, generate, generate_batch
from medusa_core.engine.precision import first_divergence
from medusa_core.modeling.models import BaseModel, MedusaModel
from medusa_core.spec.lookup import LookupConfig
from medusa_core.spec.trees import chain_tree, full_tree, preset_tree
from tiny_models import ALL_ARCHS, VOCAB, medusa_of, random_heads, tiny_base

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
CUDA = torch.device("cuda")


def on_cuda(arch: str, dtype: torch.dtype) -> MedusaModel:
    tiny = tiny_base(arch)
    base = BaseModel(tiny.model.to(CUDA, dtype), tiny.tokenizer, tiny.name, CUDA, dtype)
    return medusa_of(base, random_heads(4, 1).to(CUDA, dtype))


def plain_greedy(medusa: MedusaModel, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt], device=CUDA)
    out = medusa.base.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n)
    return out[0, len(prompt) :].tolist()


def prompts(count: int = 4) -> list[list[int]]:
    return [torch.randint(1, VOCAB, (8,), generator=torch.Generator().manual_seed(s)).tolist() for s in range(count)]


@pytest.mark.parametrize("arch", ALL_ARCHS)
@pytest.mark.parametrize("lookup", [None, LookupConfig(6, 3, 1)], ids=["heads", "heads+lookup"])
def test_cuda_fp32_is_lossless(arch, lookup):
    medusa = on_cuda(arch, torch.float32)
    for prompt in prompts():
        reference = plain_greedy(medusa, prompt, 40)
        for tree in (chain_tree(4), full_tree(2, 3), preset_tree("mc_sim_7b_63")):
            record = generate(medusa, "", tree, DecodeConfig(40, lookup=lookup), prompt_ids=prompt)
            assert record.tokens == reference, (arch, tree)


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_cuda_fp32_batches_are_lossless_per_row(arch):
    medusa = on_cuda(arch, torch.float32)
    rows = [p[: 3 + i] for i, p in enumerate(prompts(6))]  # lengths 3..8
    for tree in (full_tree(2, 3), preset_tree("mc_sim_7b_63")):
        records = generate_batch(medusa, [""] * len(rows), tree, DecodeConfig(32, lookup=LookupConfig(6, 3, 1)), prompt_ids=rows)
        assert [r.tokens for r in records] == [plain_greedy(medusa, p, 32) for p in rows], (arch, tree)


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_cuda_bf16_differs_only_at_near_ties(arch):
    medusa = on_cuda(arch, torch.bfloat16)
    for prompt in prompts():
        record = generate(medusa, "", preset_tree("mc_sim_7b_63"), DecodeConfig(40), prompt_ids=prompt)
        divergence = first_divergence(medusa.base, prompt, record.tokens, plain_greedy(medusa, prompt, 40))
        assert divergence is None or divergence.near_tie, divergence


def test_cuda_greedy_step_syncs_at_most_twice():
    medusa = on_cuda("llama", torch.float32)
    config = DecodeConfig(40, trace_text=False, lookup=LookupConfig(4, 3, 1))
    generate(medusa, "", full_tree(2, 3), config, prompt_ids=prompts(1)[0])  # warm-up
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            record = generate(medusa, "", full_tree(2, 3), config, prompt_ids=prompts(1)[0])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= 2 * record.num_steps + 2, len(syncs)  # + the prefill's read and the timing sync
