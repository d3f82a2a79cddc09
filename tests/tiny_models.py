"""Tiny random fp32 models of several architectures, and heads that always / never guess right."""

from __future__ import annotations

import torch
from hypothesis import strategies as st
from torch import nn
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from medusa_core.modeling.heads import HeadsConfig, MedusaHeads
from medusa_core.modeling.models import BaseModel, MedusaModel
from medusa_core.modeling.proposal_vocab import ProposalVocab
from medusa_core.engine.verify import forward_hidden
from medusa_core.spec.trees import chain_tree, validate_tree

VOCAB = 96
HIDDEN = 32
ARCHS = ("llama", "gpt2", "qwen2", "gpt_neox")
# Sliding windows shorter than the tests' generations; Gemma-2 soft-caps its attention and logits.
WINDOW = 12
WINDOWED_ARCHS = ("mistral", "qwen3", "gemma2", "phi3")
ALL_ARCHS = ARCHS + WINDOWED_ARCHS


def tiny_causal_lm(arch: str, seed: int = 0, context: int = 256) -> nn.Module:
    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, tie_word_embeddings=False)
    if arch == "llama":
        cfg = LlamaConfig(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context, **common)
        model = LlamaForCausalLM(cfg)
    elif arch == "gpt2":
        cfg = GPT2Config(n_embd=HIDDEN, n_layer=2, n_head=4, n_positions=context, **common)
        model = GPT2LMHeadModel(cfg)
    elif arch == "qwen2":
        cfg = Qwen2Config(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context, **common)
        model = Qwen2ForCausalLM(cfg)
    elif arch == "gpt_neox":
        cfg = GPTNeoXConfig(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=context, **common)
        model = GPTNeoXForCausalLM(cfg)
    elif arch in WINDOWED_ARCHS:
        model = windowed_causal_lm(arch, context, common)
    else:
        raise ValueError(arch)
    # Larger weights than the default init so random models don't collapse to one token.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model.eval().requires_grad_(False)


def windowed_causal_lm(arch: str, context: int, common: dict) -> nn.Module:
    gqa = dict(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
               max_position_embeddings=context, sliding_window=WINDOW, **common)
    if arch == "mistral":  # every layer slides
        return MistralForCausalLM(MistralConfig(**gqa))
    if arch == "qwen3":  # layer 0 full, layer 1 sliding
        return Qwen3ForCausalLM(Qwen3Config(head_dim=8, use_sliding_window=True, max_window_layers=1, **gqa))
    if arch == "gemma2":  # alternating sliding / full, soft-capped attention and logits, eager attention only
        return Gemma2ForCausalLM(Gemma2Config(head_dim=8, final_logit_softcapping=3.0, attn_logit_softcapping=5.0,
                                              query_pre_attn_scalar=8, **gqa))
    return Phi3ForCausalLM(Phi3Config(pad_token_id=0, bos_token_id=1, eos_token_id=2, **gqa))  # every layer slides


class StubTokenizer:
    """Enough of a tokenizer for traces: no chat template, token text = its id."""

    chat_template = None
    eos_token_id = None
    pad_token_id = 0

    def __call__(self, text):
        """Space-separated token ids: what a test prompt spells."""
        return {"input_ids": [int(word) for word in text.split()]}

    def batch_decode(self, rows):
        return [" ".join(f"<{i}>" for i in row) for row in rows]

    def decode(self, ids, **_):
        return " ".join(f"<{i}>" for i in ids)


def tiny_base(arch: str, seed: int = 0, eos: int | None = None, context: int = 256) -> BaseModel:
    model = tiny_causal_lm(arch, seed, context)
    model.generation_config.eos_token_id = eos
    return BaseModel(model, StubTokenizer(), f"tiny-{arch}", torch.device("cpu"), torch.float32)


def random_heads(num_heads: int, seed: int = 0, shared: bool = False, root_token: bool = False) -> MedusaHeads:
    torch.manual_seed(seed)
    heads = MedusaHeads(HeadsConfig(num_heads, 1, HIDDEN, VOCAB, shared, root_token=root_token))
    with torch.no_grad():
        for p in heads.parameters():
            p.normal_(0, 0.5)
    return heads.eval()


class ReferenceHeads(nn.Module):
    """Heads that look the hidden state up among those of a reference greedy run (nearest
    neighbour) and put the true future token at rank 0 (oracle) or at the very last rank."""

    def __init__(self, base: BaseModel, prompt: list[int], reference: list[int], num_heads: int, right: bool) -> None:
        super().__init__()
        self.config = HeadsConfig(num_heads, 0, HIDDEN, VOCAB, True)
        tokens = prompt + reference
        cache = __import__("transformers").DynamicCache(config=base.model.config)
        with torch.no_grad():
            positions = torch.arange(len(tokens))[None]
            self.keys = forward_hidden(base.model, torch.tensor([tokens]), cache, positions)  # [T, d]
        self.future = [tokens[t + 2 : t + 2 + num_heads] for t in range(len(tokens))]
        self.right = right

    def forward(
        self, hidden: torch.Tensor, lm_head=None, num_heads: int | None = None, root_embeds=None
    ) -> torch.Tensor:
        flat = hidden.reshape(-1, hidden.shape[-1])
        nearest = torch.cdist(flat, self.keys).argmin(dim=1)  # [N]
        k = num_heads or self.config.num_heads
        logits = torch.zeros(k, flat.shape[0], VOCAB)
        for n, t in enumerate(nearest.tolist()):
            for h, tok in enumerate(self.future[t][:k]):
                logits[h, n, tok] = 1.0 if self.right else -1.0
        return logits.reshape(k, *hidden.shape[:-1], VOCAB)


def medusa_of(base: BaseModel, heads: nn.Module, proposal_tokens: list[int] | None = None) -> MedusaModel:
    proposal = None
    if proposal_tokens is not None:
        proposal = ProposalVocab.from_lm_head(torch.tensor(proposal_tokens), base.model.get_output_embeddings())
    return MedusaModel(base, heads, "test-heads", chain_tree(heads.config.num_heads), proposal)


def greedy_reference(base: BaseModel, prompt: list[int], max_new_tokens: int) -> list[int]:
    out = base.model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=max_new_tokens, attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
    return out[0, len(prompt):].tolist()


@st.composite
def trees(draw, num_heads=4, top_k=5, max_nodes=24):
    """Random valid trees: grow by adding a child (next free rank) to a random existing node."""
    paths: list[tuple[int, ...]] = []
    for _ in range(draw(st.integers(1, max_nodes))):
        parents = [()] + [p for p in paths if len(p) < num_heads]
        parent = draw(st.sampled_from(parents))
        used = {p[-1] for p in paths if p[:-1] == parent}
        free = [r for r in range(top_k) if r not in used]
        if free:
            paths.append(parent + (draw(st.sampled_from(free)),))
    return validate_tree(paths)


prompts = st.lists(st.integers(1, VOCAB - 1), min_size=1, max_size=12)
