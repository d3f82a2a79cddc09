"""Device and dtype choice, and the CUDA checks that run only where a GPU is present."""

import pytest
import torch

from medusa_core.engine.loop import DecodeConfig, generate
from medusa_core.modeling.device import resolve_device, resolve_dtype
from medusa_core.modeling.models import BaseModel, MedusaModel
from medusa_core.spec.trees import full_tree
from tiny_models import greedy_reference, random_heads, tiny_causal_lm, StubTokenizer


def test_auto_picks_cuda_only_when_present():
    assert resolve_device("auto", cuda_available=True).type == "cuda"
    assert resolve_device("auto", cuda_available=False).type == "cpu"
    assert resolve_device("cpu", cuda_available=True).type == "cpu"
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda", cuda_available=False)
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")


def test_dtype_defaults():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("auto", cuda, bf16_supported=True) == torch.bfloat16
    assert resolve_dtype("auto", cuda, bf16_supported=False) == torch.float16
    assert resolve_dtype("float16", cpu) == torch.float16
    with pytest.raises(ValueError):
        resolve_dtype("int8", cpu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_lossless_on_cuda_fp32(arch):
    model = tiny_causal_lm(arch).cuda()
    base = BaseModel(model, StubTokenizer(), arch, torch.device("cuda"), torch.float32)
    medusa = MedusaModel(base, random_heads(3).cuda(), "random", ())
    prompt = [3, 5, 7, 11]
    record = generate(medusa, "", full_tree(3, 3), DecodeConfig(max_new_tokens=32), prompt_ids=prompt)
    assert record.device.startswith("cuda")
    assert record.tokens == greedy_reference(base, prompt, 32)
