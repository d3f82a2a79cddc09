"""Models and heads: loading, heads and their checkpoints, devices, the embedded default model."""
