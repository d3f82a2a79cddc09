"""Medusa decoding on any Hugging Face causal LM: heads, trees, tree-attention verification, traces."""

from .acceptance import TypicalConfig
from .decoding import DecodeConfig, PromptTooLongError, generate, stream_generation
from .device import resolve_device, resolve_dtype
from .heads import HeadsConfig, MedusaHeads
from .heads_io import HeadsLoadError, load_heads, save_heads
from .models import BaseModel, MedusaModel, ModelLoadError, encode_prompt, load_base_model, load_medusa
from .traces import GenerationRecord, Node, StepRecord
from .trees import (
    TreeBuffers,
    TreeError,
    build_tree_buffers,
    chain_tree,
    full_tree,
    load_tree_file,
    preset_tree,
    resolve_tree,
    save_tree_file,
    validate_tree,
)

__all__ = [name for name in dir() if not name.startswith("_")]
