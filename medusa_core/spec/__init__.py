"""Torch-free specifications: tree validation, presets, tree files and the context lookup."""
