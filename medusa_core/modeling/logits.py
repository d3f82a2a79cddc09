"""The base model's logits from its last hidden states, computed as the model itself computes them.

Decoding reads hidden states from the base model's trunk and projects only the rows it needs, so it
must also apply what a model's own forward does after its lm_head: Gemma-2/3 soft-cap their
logits, Granite divides them, Cohere multiplies them. Greedy decoding survives a missing transform
(it is monotone), temperature and typical acceptance do not. `check_logits` compares with the
model's own forward once at load, so a model with some other transform is refused by name
instead of decoded wrongly.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel


def final_logits(model: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    """hidden [..., d] -> logits [..., V] as model.forward returns them."""
    logits = model.get_output_embeddings()(hidden)
    cfg = model.config
    cap = getattr(cfg, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    scaling = getattr(cfg, "logits_scaling", None)
    if scaling:
        logits = logits / scaling
    scale = getattr(cfg, "logit_scale", None)
    if scale:
        logits = logits * scale
    return logits


def check_logits(model: PreTrainedModel, device: torch.device) -> str | None:
    """None when final_logits(trunk output) equals the model's own logits on a short input, else
    why not. The input is 4 token ids; the comparison allows half-precision rounding."""
    ids = torch.arange(1, 5, device=device)[None] % model.config.vocab_size
    with torch.inference_mode():
        own = model(input_ids=ids, use_cache=False).logits.float()
        ours = final_logits(model, model.base_model(input_ids=ids, use_cache=False).last_hidden_state).float()
    tolerance = 1e-4 if model.dtype == torch.float32 else 5e-2
    error = float((own - ours).abs().max() / own.abs().max().clamp(min=1e-6))
    if error > tolerance:
        return (
            f"{type(model).__name__}'s forward transforms its logits in a way decoding does not reproduce "
            f"(relative difference {error:.2g} from lm_head(hidden)); it is not supported"
        )
    return None
