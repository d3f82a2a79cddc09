"""Engine v2: drafters merged under one root, host round trips per step, streaming across threads,
the stop rule, sliding windows and logit transforms on tiny random fp32 models."""

import threading
from collections import Counter

import pytest
import torch
from torch.overrides import TorchFunctionMode

from medusa_core.engine.drafters import Draft, DraftContext, HeadsDrafter, LookupDrafter, merge_drafts
from medusa_core.engine.loop import DecodeConfig, generate, stream_generation
from medusa_core.engine.records import GenerationRecord
from medusa_core.modeling.logits import check_logits, final_logits
from medusa_core.modeling.models import ModelLoadError, prepare_base
from medusa_core.spec.lookup import LookupConfig
from medusa_core.spec.trees import chain_tree, full_tree, preset_tree
from tiny_models import (
    WINDOW,
    WINDOWED_ARCHS,
    ReferenceHeads,
    StubTokenizer,
    greedy_reference,
    medusa_of,
    random_heads,
    tiny_base,
)

# Everything that makes the host wait for the device.
DEVICE_TO_HOST = {"tolist", "item", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy", "nonzero"}


class CountHostReads(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in DEVICE_TO_HOST:
            self.calls[func.__name__] += 1
        return func(*args, **(kwargs or {}))


def test_merge_makes_equal_siblings_one_node():
    ctx = DraftContext(tokens=[5, 6, 7], head_tokens=[[10, 11], [20, 21]], head_probs=[[0.5, 0.2], [0.4, 0.1]])
    heads = HeadsDrafter(((0,), (1,), (0, 0))).draft(ctx)  # 10, 11, then 20 under 10
    lookup = Draft("lookup", (10, 20, 30), (-1, 0, 1), (0.0,) * 3, (-1,) * 3)
    tree = merge_drafts(9, 0.9, [heads, lookup])
    assert tree.tokens == (9, 10, 11, 20, 30)
    assert tree.parents == (-1, 0, 0, 1, 3)  # the chain's 10 and 20 are the heads' nodes; 30 hangs under 20
    assert tree.sources == ("root", "heads+lookup", "heads", "heads+lookup", "lookup")
    assert tree.probs[:4] == (0.9, 0.5, 0.2, 0.4) and tree.ranks == (-1, 0, 1, 0, -1)


def test_lookup_drafter_copies_what_followed_the_latest_match():
    drafter = LookupDrafter(LookupConfig(tokens=3, max_ngram=2, min_ngram=1))
    draft = drafter.draft(DraftContext([1, 2, 3, 4, 1, 2, 9, 9, 1, 2], [], []))
    assert draft.tokens == (9, 9, 1) and draft.parents == (-1, 0, 1)


def test_lookup_that_repeats_the_heads_is_verified_once_and_stays_lossless():
    """Oracle heads and a lookup over a model that repeats itself propose the same tokens."""
    base = tiny_base("mistral")  # its greedy output cycles through a few tokens
    prompt = [3, 1, 4, 1, 5]
    reference = greedy_reference(base, prompt, 40)
    medusa = medusa_of(base, ReferenceHeads(base, prompt, reference, 4, right=True))
    lookup = LookupConfig(tokens=4, max_ngram=3, min_ngram=1)
    record = generate(medusa, "", chain_tree(4), DecodeConfig(40, lookup=lookup), prompt_ids=prompt)
    assert record.tokens == reference
    merged = [s for s in record.steps if any(n.source == "heads+lookup" for n in s.nodes)]
    assert merged, "the lookup never repeated a head's token"
    for step in record.steps:
        siblings = Counter((n.parent, n.token_id) for n in step.nodes)
        assert max(siblings.values()) == 1  # no two children of a node carry the same token
        assert len(step.nodes) <= 1 + 4 + 4


@pytest.mark.parametrize("lookup", [None, LookupConfig(4, 3, 1)], ids=["heads", "heads+lookup"])
def test_greedy_step_reads_the_device_at_most_twice(lookup):
    base = tiny_base("llama")
    medusa = medusa_of(base, random_heads(4, 1))
    counter = CountHostReads()
    with counter:
        record = generate(
            medusa, "", full_tree(2, 3), DecodeConfig(40, trace_text=False, lookup=lookup), prompt_ids=[3, 1, 4, 1, 5]
        )
    assert record.num_steps > 10
    assert sum(counter.calls.values()) <= 2 * record.num_steps + 1, counter.calls  # + 1: after the prefill


def test_stream_resumed_on_other_threads_keeps_inference_mode_inside_and_out():
    """Gradio resumes a generator on any worker thread: each step must run in inference mode and
    leave no thread in it."""
    base = tiny_base("llama")
    medusa = medusa_of(base, random_heads(4, 0))
    seen: list[bool] = []
    original = base.model.base_model.forward

    def spying_forward(*args, **kwargs):
        seen.append(torch.is_inference_mode_enabled())
        return original(*args, **kwargs)

    base.model.base_model.forward = spying_forward
    stream = stream_generation(medusa, "", chain_tree(2), DecodeConfig(12), prompt_ids=[3, 1, 4])
    items: list = []
    after: list[bool] = []

    def resume() -> None:
        items.append(next(stream))
        after.append(torch.is_inference_mode_enabled())

    while not items or not isinstance(items[-1], GenerationRecord):
        worker = threading.Thread(target=resume)
        worker.start()
        worker.join()
    del base.model.base_model.forward
    assert len(seen) == len(items)  # prefill + one pass per step
    assert all(seen) and not any(after)
    assert not torch.is_inference_mode_enabled()
    assert items[-1].tokens == greedy_reference(base, [3, 1, 4], 12)


def test_no_eos_in_the_generation_config_runs_to_max_new_tokens_like_generate():
    base = tiny_base("qwen2", eos=None)
    reference = greedy_reference(base, [2, 7, 1], 40)
    tokenizer = StubTokenizer()
    tokenizer.eos_token_id = reference[3]  # the tokenizer's EOS appears early in the output
    base = type(base)(base.model, tokenizer, base.name, base.device, base.dtype)
    record = generate(medusa_of(base, random_heads(4, 0)), "", chain_tree(3), DecodeConfig(40), prompt_ids=[2, 7, 1])
    assert record.tokens == reference and len(record.tokens) == 40
    assert record.stop_reason == "max_new_tokens"


@pytest.mark.parametrize("arch", WINDOWED_ARCHS)
@pytest.mark.parametrize("lookup", [None, LookupConfig(6, 3, 1)], ids=["heads", "heads+lookup"])
def test_sliding_window_models_stay_lossless_past_the_window(arch, lookup):
    base = tiny_base(arch)
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    reference = greedy_reference(base, prompt, 40)
    assert len(prompt) + 40 > 3 * WINDOW
    for tree in (full_tree(2, 3), preset_tree("mc_sim_7b_63")):
        medusa = medusa_of(base, random_heads(4, 1))
        record = generate(medusa, "", tree, DecodeConfig(40, lookup=lookup), prompt_ids=prompt)
        assert record.tokens == reference, tree


def test_gemma2_logits_are_soft_capped_as_its_forward_does():
    base = tiny_base("gemma2")
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        own = base.model(input_ids=ids).logits
        hidden = base.model.base_model(input_ids=ids).last_hidden_state
        assert torch.allclose(final_logits(base.model, hidden), own, atol=1e-6)
        assert not torch.allclose(base.model.get_output_embeddings()(hidden), own, atol=1e-3)
    assert float(own.abs().max()) <= 3.0  # capped at final_logit_softcapping
    assert check_logits(base.model, base.device) is None


def test_a_model_with_an_unknown_logit_transform_is_refused_by_name():
    base = tiny_base("llama")
    original = base.model.forward

    def doubled(*args, **kwargs):
        out = original(*args, **kwargs)
        out.logits = out.logits * 2
        return out

    base.model.forward = doubled
    with pytest.raises(ModelLoadError, match="LlamaForCausalLM.*not supported"):
        prepare_base(base.model, StubTokenizer(), "tiny-llama", base.device, base.dtype)
