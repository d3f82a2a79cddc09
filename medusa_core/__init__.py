"""Medusa decoding on any Hugging Face causal LM: heads, trees, tree-attention verification, traces.

Names are imported lazily (PEP 562) so that light users such as `medusa_core.trees` do not pay
for importing transformers.
"""

from importlib import import_module

_EXPORTS = {
    "TypicalConfig": "acceptance",
    "LookupConfig": "context_lookup",
    "find_continuation": "context_lookup",
    "lookup_or_none": "context_lookup",
    "DecodeConfig": "decoding",
    "PromptTooLongError": "decoding",
    "generate": "decoding",
    "stream_generation": "decoding",
    "resolve_device": "device",
    "resolve_dtype": "device",
    "HeadsConfig": "heads",
    "MedusaHeads": "heads",
    "HeadsLoadError": "heads_io",
    "load_heads": "heads_io",
    "save_heads": "heads_io",
    "BaseModel": "models",
    "MedusaModel": "models",
    "ModelLoadError": "models",
    "encode_prompt": "models",
    "load_base_model": "models",
    "load_medusa": "models",
    "GenerationRecord": "traces",
    "Node": "traces",
    "StepRecord": "traces",
    "TreeBuffers": "trees",
    "TreeError": "trees",
    "build_tree_buffers": "trees",
    "chain_tree": "trees",
    "full_tree": "trees",
    "load_tree_file": "trees",
    "preset_tree": "trees",
    "resolve_tree": "trees",
    "save_tree_file": "trees",
    "validate_tree": "trees",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'medusa_core' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
