"""Opt-in CPU fast paths: the few-rows matmul kernel and grouped-query attention under masks."""
