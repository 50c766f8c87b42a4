"""One place that decides where tensors live.

vdlearn never calls ``.cuda()``: every function that allocates takes a ``device``
argument, and ``"auto"`` resolves here. CPU works everywhere; a GPU (CUDA or Apple
MPS) is used when present; several GPUs go through HF accelerate (see the trainer).
"""

from __future__ import annotations

import torch


def get_device(device: str | torch.device | None = "auto") -> torch.device:
    """Resolve ``"auto"`` (or ``None``) to the best available device.

    >>> get_device("cpu")
    device(type='cpu')
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def describe_device(device: str | torch.device | None = "auto") -> str:
    """A one-line description of the device, for logs and json sidecars."""
    dev = get_device(device)
    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    if dev.type == "mps":
        return "mps: Apple GPU"
    import os
    import platform

    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
