"""Counter-based random numbers: every clip is a pure function of (seed, index).

The toy world must give the same clip for the same ``(seed, index)`` whatever batch
it is rendered in and on whatever machine. A stateful generator cannot promise that
cheaply for a batch of arbitrary indices; a *hash* of ``(seed, stream, index,
counter)`` can. We use the SplitMix64 finaliser (Steele, Lea & Flood 2014), the
same mixer that seeds many modern generators, on unsigned 64-bit numpy integers.

Taught in notebook 01_toy_video_world.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijection of uint64 that scrambles every bit."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def clip_keys(seed: int, indices: np.ndarray, stream: int) -> np.ndarray:
    """One 64-bit key per index, for a named random ``stream`` (attributes, noise, ...)."""
    idx = np.asarray(indices, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        base = _mix(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64) * _GOLDEN + np.uint64(stream))
        return _mix(base + _mix(idx + _GOLDEN))


def uniform(seed: int, indices, stream: int, n: int) -> np.ndarray:
    """``(len(indices), n)`` floats in [0, 1), a pure function of (seed, index, stream)."""
    keys = clip_keys(seed, np.atleast_1d(indices), stream)  # (b,)
    with np.errstate(over="ignore"):
        counters = keys[:, None] + (np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN)[None, :]  # (b, n)
        bits = _mix(counters) >> np.uint64(11)  # 53 random bits
    return bits.astype(np.float64) * (1.0 / (1 << 53))


def integer_seed(seed: int, index: int, stream: int) -> int:
    """A 63-bit integer seed for a ``torch.Generator``, derived from (seed, index, stream)."""
    return int(clip_keys(seed, np.array([index]), stream)[0] >> np.uint64(1))
