"""Device and dtype selection: CUDA in half precision when present, else the CPU in fp32."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")
DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")


def resolve_device(choice: str = "auto", cuda_available: bool | None = None) -> torch.device:
    if choice not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {choice!r}")
    has_cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if choice == "cuda" and not has_cuda:
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available")
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and has_cuda) else "cpu")


def resolve_dtype(choice: str, device: torch.device, bf16_supported: bool | None = None) -> torch.dtype:
    """fp32 on the CPU (half precision is slow there); bf16 on GPUs that support it, else fp16."""
    if choice not in DTYPE_CHOICES:
        raise ValueError(f"dtype must be one of {DTYPE_CHOICES}, got {choice!r}")
    if choice != "auto":
        return getattr(torch, choice)
    if device.type != "cuda":
        return torch.float32
    bf16 = torch.cuda.is_bf16_supported() if bf16_supported is None else bf16_supported
    return torch.bfloat16 if bf16 else torch.float16


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
