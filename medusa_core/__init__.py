"""Medusa decoding on any Hugging Face causal LM: heads, trees, tree-attention verification, traces.

Names are imported lazily (PEP 562) so that light users such as `medusa_core.spec.trees` do not pay
for importing transformers.
"""

from importlib import import_module

_EXPORTS = {
    "SamplingConfig": "engine.sampling",
    "ThreadBudget": "accel.threads",
    "TypicalConfig": "engine.acceptance",
    "LookupConfig": "spec.lookup",
    "find_continuation": "spec.lookup",
    "lookup_or_none": "spec.lookup",
    "DecodeConfig": "engine.config",
    "PromptTooLongError": "engine.loop",
    "generate": "engine.loop",
    "generate_batch": "engine.loop",
    "stream_generation": "engine.loop",
    "stream_rows": "engine.loop",
    "Divergence": "engine.precision",
    "first_divergence": "engine.precision",
    "resolve_device": "modeling.device",
    "DefaultModelError": "modeling.default_model",
    "resolve_dtype": "modeling.device",
    "HeadsConfig": "modeling.heads",
    "MedusaHeads": "modeling.heads",
    "HeadsLoadError": "modeling.heads_io",
    "load_heads": "modeling.heads_io",
    "save_heads": "modeling.heads_io",
    "BaseModel": "modeling.models",
    "MedusaModel": "modeling.models",
    "ModelLoadError": "modeling.models",
    "encode_prompt": "modeling.models",
    "load_base_model": "modeling.models",
    "load_medusa": "modeling.models",
    "GenerationRecord": "engine.records",
    "Node": "engine.records",
    "StepRecord": "engine.records",
    "RecordFormatError": "engine.record_io",
    "read_record": "engine.record_io",
    "record_from_json": "engine.record_io",
    "TreeBuffers": "engine.buffers",
    "TreeError": "spec.trees",
    "build_tree_buffers": "engine.buffers",
    "chain_tree": "spec.trees",
    "full_tree": "spec.trees",
    "load_tree_file": "spec.trees",
    "preset_tree": "spec.trees",
    "resolve_tree": "spec.trees",
    "save_tree_file": "spec.trees",
    "validate_tree": "spec.trees",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'medusa_core' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
