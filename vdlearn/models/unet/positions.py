"""Where is a frame? Positional information for temporal attention.

Self-attention is *permutation-equivariant*: shuffle the frames and its output is
shuffled the same way, so on its own it cannot tell "moving left" from "moving right".
The three video models differ exactly here:

* **VideoCrafter2** (arXiv 2401.09047): no positions at all in temporal attention. Frame
  order enters only through the temporal convolutions in the ResBlocks.
* **VideoCrafter1** (arXiv 2310.19512): Shaw et al. (2018) relative positions. Each
  attention layer owns two tables ``R^K, R^V`` of shape ``[2*max + 1, dim_head]``, shared
  across heads, indexed by the clipped distance ``clip(j - i, -max, max) + max``
  (``max = 16`` frames, so 33 rows)::

      logits_ij = (q_i . k_j + q_i . R^K_{j-i}) / sqrt(d)
      out_i     = sum_j p_ij (v_j + R^V_{j-i})

* **LaVie** (arXiv 2309.15103, base T2V model): rotary position embedding (RoPE, Su et
  al. 2021) on the first 32 channels of each head (interleaved pairs, theta 10000,
  positions 0..T-1; q is multiplied by ``1/sqrt(d)`` *before* the rotation) **plus** a
  T5-style learned bias per head, looked up from 32 log-spaced distance buckets
  (max distance 32)::

      logits_ij = rot(q_i / sqrt(d), i) . rot(k_j, j) + bias[head, bucket(j - i)]

  Rotating q by angle ``i*f`` and k by ``j*f`` makes their dot product depend on ``j - i``
  only: relative position for free, inside the dot product.
* **Absolute** frame positions, as in AnimateDiff's motion module (Guo et al. 2023,
  arXiv 2307.04725, sec. 4.2: "sinusoidal position encoding") and Latte (Ma et al. 2024):
  the transformer sinusoid of the frame index is added to the tokens that enter each
  temporal self-attention, so a frame knows *where* it is in the clip, not only how far
  it is from the others::

      pe[n, 2i] = sin(n / 10000^(2i/d)),   pe[n, 2i+1] = cos(n / 10000^(2i/d))
      attention(x + pe)                    # the residual path carries x, not x + pe

* **Absolute spatial positions**, as Latte (Ma et al. 2024, arXiv 2401.03048, sec. 3.1) and
  DiT add them to the patch tokens: the 2-D sin-cos table of ViT-MAE, half of the channels
  for the column, half for the row (:func:`sincos_2d_positions`). The papers' video U-Nets
  have none: a convolution on pure noise knows where it is only through the zero padding,
  which changes the *variance* of its output near the border, not its mean. Adding the
  table to the tokens of every spatial transformer (``UNetConfig.spatial_position``) is
  vdlearn's transplant of Latte's positions into the U-Net (notebook 05).

Taught in ``notebooks/04_temporal_unet.ipynb`` (the frame-order experiment).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def relative_distances(length_q: int, length_k: int, device=None) -> torch.Tensor:
    """``D[i, j] = j - i`` (key position minus query position), shape ``(length_q, length_k)``."""
    q = torch.arange(length_q, device=device)
    k = torch.arange(length_k, device=device)
    return k[None, :] - q[:, None]


class ShawRelativePosition(nn.Module):
    """A learned table ``[2*max_distance + 1, dim]`` indexed by the clipped distance ``j - i``.

    ``forward(Lq, Lk) -> (Lq, Lk, dim)``: one vector per (query, key) pair. VideoCrafter1
    uses one table for keys and one for values in each attention layer.
    """

    def __init__(self, dim: int, max_distance: int):
        super().__init__()
        self.max_distance = max_distance
        self.table = nn.Parameter(torch.empty(2 * max_distance + 1, dim))
        nn.init.xavier_uniform_(self.table)

    def forward(self, length_q: int, length_k: int) -> torch.Tensor:
        d = relative_distances(length_q, length_k, self.table.device)
        index = d.clamp(-self.max_distance, self.max_distance) + self.max_distance  # (Lq, Lk) in [0, 2*max]
        return self.table[index]  # (Lq, Lk, dim)


class PartialRotaryEmbedding(nn.Module):
    """RoPE applied to the first ``dim`` channels of each head, leaving the rest untouched.

    Channel pairs are *interleaved*: ``(x0, x1), (x2, x3), ...``; pair ``p`` at position
    ``n`` is rotated by the angle ``n * theta^(-2p/dim)``. The frequency table is computed
    on the fly (not stored), so it never appears in a state dict.
    """

    def __init__(self, dim: int = 32, theta: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"The rotary dimension must be even (channels rotate in pairs), got {dim}.")
        self.dim = dim
        self.theta = theta

    def frequencies(self, device=None) -> torch.Tensor:
        """``(dim/2,)``: the angular frequency ``theta^(-2p/dim)`` of every channel pair ``p``.

        LaVie's checkpoints store these numbers as ``rotary_emb.freqs`` (a frozen parameter of
        ``rotary_embedding_torch``); here they are computed, never stored.
        """
        return self.theta ** (-torch.arange(0, self.dim, 2, device=device, dtype=torch.float32) / self.dim)

    def angles(self, length: int, device=None) -> torch.Tensor:
        """``(length, dim)``: the rotation angle of every channel, each pair's angle repeated twice."""
        inv_freq = self.frequencies(device)
        pos = torch.arange(length, device=device, dtype=torch.float32)
        ang = pos[:, None] * inv_freq[None, :]  # (length, dim/2)
        return ang.repeat_interleave(2, dim=-1)  # (length, dim): a0 a0 a1 a1 ...

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` of shape ``(..., length, head_dim)`` by position along the ``length`` axis."""
        length, head_dim = x.shape[-2], x.shape[-1]
        if head_dim < self.dim:
            raise ValueError(
                f"Rotary embedding on {self.dim} channels needs a head dimension of at least {self.dim}, "
                f"got {head_dim}. Use rotary_dim <= head_channels in the config."
            )
        ang = self.angles(length, x.device)
        cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)  # (length, dim)
        rot, rest = x[..., : self.dim], x[..., self.dim :]
        pairs = rot.unflatten(-1, (-1, 2))  # (..., length, dim/2, 2)
        # rotate_half on interleaved pairs: (x_even, x_odd) -> (-x_odd, x_even)
        swapped = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)  # (..., length, dim)
        return torch.cat([rot * cos + swapped * sin, rest], dim=-1)


def sinusoidal_positions(length: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(length, dim)``: the sinusoid of positions ``0..length-1``, sines on even channels, cosines on odd."""
    if dim % 2:
        raise ValueError(f"Absolute sinusoidal positions need an even width, got {dim}.")
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]  # (L, 1)
    inv_freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * inv_freq)
    pe[:, 1::2] = torch.cos(pos * inv_freq)
    return pe.to(dtype)


def sincos_2d_positions(height: int, width: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(height*width, dim)``: Latte's / DiT's fixed 2-D positions of a grid, row-major.

    Channels ``[0, dim/2)`` encode the column ``x``, ``[dim/2, dim)`` the row ``y``; each half
    is ``[sin(p * w_k), cos(p * w_k)]`` with ``w_k = 10000^(-k / (dim/4))``, ``k < dim/4``.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos positions need a width divisible by 4, got {dim}.")
    quarter = dim // 4
    freq = 1.0 / 10000.0 ** (torch.arange(quarter, device=device, dtype=torch.float64) / quarter)  # (dim/4,)
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float64),
                            torch.arange(width, device=device, dtype=torch.float64), indexing="ij")  # (h, w)

    def table(p):  # (h*w,) -> (h*w, dim/2)
        angle = p.reshape(-1, 1) * freq
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    return torch.cat([table(xs), table(ys)], dim=1).to(dtype)  # (h*w, dim)


def t5_relative_bucket(distance: torch.Tensor, num_buckets: int = 32, max_distance: int = 32) -> torch.Tensor:
    """T5's bidirectional bucketing of a relative distance ``j - i`` (Raffel et al. 2020).

    Half of the buckets are for keys *after* the query (``j > i``), half for keys at or
    before it. Within each half, the first ``num_buckets/4`` distances get one bucket each;
    larger distances share logarithmically wider buckets up to ``max_distance``.
    """
    n = -distance  # i - j: positive for keys in the past
    half = num_buckets // 2
    bucket = (n < 0).long() * half  # keys in the future use the upper half
    n = n.abs()
    max_exact = half // 2
    # log-spaced buckets for |n| >= max_exact (clamp avoids log(0); those entries use n itself)
    log_ratio = torch.log(n.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (half - max_exact)).long()
    large = large.clamp(max=half - 1)
    return bucket + torch.where(n < max_exact, n, large)


class T5RelativeBias(nn.Module):
    """A learned scalar per (head, bucket): ``forward(L) -> (heads, L, L)`` added to the logits."""

    def __init__(self, heads: int, num_buckets: int = 32, max_distance: int = 32):
        super().__init__()
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.embedding = nn.Embedding(num_buckets, heads)

    def forward(self, length: int) -> torch.Tensor:
        d = relative_distances(length, length, self.embedding.weight.device)
        buckets = t5_relative_bucket(d, self.num_buckets, self.max_distance)  # (L, L)
        return self.embedding(buckets).permute(2, 0, 1)  # (heads, L, L)
