"""Peak GPU memory and wall time of one call: the measurement every benchmark table of ``benchmarks/`` prints.

Imports only torch, so that ``official_lavie_worker.py`` can use it in an environment without vdlearn.
"""

from __future__ import annotations

import math
import time

import torch


def measure(fn, device: torch.device):
    """``(result, peak GiB or NaN, seconds)`` of ``fn()``; an out-of-memory error gives ``(None, inf, nan)``."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        with torch.no_grad():
            out = fn()
    except torch.OutOfMemoryError:
        return None, math.inf, math.nan
    if cuda:
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else math.nan
    return out, peak, time.perf_counter() - start
