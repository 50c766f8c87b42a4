"""Spatial and temporal transformers: attention inside the U-Net, across pixels and across frames.

Both wrap the same pre-norm transformer block (Stable Diffusion's ``BasicTransformerBlock``)::

    x = x + attn1(LN(x))          # self-attention
    x = x + attn2(LN(x), ctx)     # cross-attention to the text (spatial); a 2nd self-attention (temporal)
    x = x + FF(LN(x))             # GEGLU feed-forward: W2 (a * GELU(g)),  [a, g] = W1 x,  4x wide

and differ only in *which tokens form a sequence*:

* :class:`SpatialTransformer` (per frame): the ``h*w`` pixels of one frame attend to each
  other and to the caption. GroupNorm (eps 1e-6) sees one frame at a time.
* :class:`TemporalTransformer` (VideoCrafter1, arXiv 2310.19512; VideoCrafter2, arXiv
  2401.09047; LaVie, arXiv 2309.15103): every pixel location becomes a sequence of ``t``
  frames, ``(b, c, t, h, w) -> (b*h*w, t, c)``, and attends over time only. GroupNorm
  (eps 1e-6) runs on the 5-D video, so its statistics **span all frames**. Both of its
  attentions are self-attentions (``temporal_selfatt_only``); positions are optional
  (:mod:`vdlearn.models.unet.positions`).

Each transformer is ``GroupNorm -> Linear proj_in -> blocks -> Linear proj_out`` plus a
residual; ``proj_out`` starts at zero, so a freshly inserted transformer is the identity.

Taught in ``notebooks/04_temporal_unet.ipynb``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vdlearn.models.unet.attention import Attention
from vdlearn.models.unet.positions import sincos_2d_positions
from vdlearn.models.unet.resblock import frames_as_rows, rows_as_frames


class GEGLUFeedForward(nn.Module):
    """``W2 (a * GELU(g))`` with ``[a, g] = W1 x`` (Shazeer 2020), hidden width ``mult * dim``."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        hidden = dim * mult
        self.proj_in = nn.Linear(dim, 2 * hidden)
        self.dropout = nn.Dropout(dropout)
        self.proj_out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # proj_in holds [W_a; W_g] in one (2*hidden, dim) matrix (the official layout). Two
        # matmuls with its halves give the same numbers as one matmul and .chunk(2), and a
        # faster backward on CPU (no concatenation of the two gradients).
        w, b = self.proj_in.weight, self.proj_in.bias
        hidden = w.shape[0] // 2
        a = F.linear(x, w[:hidden], b[:hidden])  # (..., hidden)
        gate = F.linear(x, w[hidden:], b[hidden:])  # (..., hidden)
        return self.proj_out(self.dropout(a * F.gelu(gate)))


class TransformerBlock(nn.Module):
    """Pre-norm block: self-attention, cross- (or second self-) attention, GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int | None = None,
                 dropout: float = 0.0, attn_options: dict | None = None, cross_options: dict | None = None):
        """``attn_options`` go to both attentions (positions); ``cross_options`` to ``attn2`` only."""
        super().__init__()
        attn_options, cross_options = attn_options or {}, cross_options or {}
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, None, heads, dim_head, dropout, **attn_options)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, context_dim, heads, dim_head, dropout, **attn_options, **cross_options)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = GEGLUFeedForward(dim, dropout=dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))  # (B, L, dim)
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Attention over the pixels of each frame, with cross-attention to ``context``.

    ``forward(x (b*t, c, h, w), context (b, n, d) | (b*t, n, d) | None) -> (b*t, c, h, w)``.
    ``position="absolute"`` adds Latte's 2-D sin-cos positions to the tokens after ``proj_in``
    (the papers' U-Nets: ``"none"``).
    """

    def __init__(self, channels: int, heads: int, dim_head: int, depth: int = 1,
                 context_dim: int | None = None, dropout: float = 0.0, norm_groups: int = 32,
                 image_context: bool = False, text_context_len: int = 77, image_scale: float = 1.0,
                 position: str = "none"):
        super().__init__()
        if position not in ("none", "absolute"):
            raise ValueError(f"Spatial positions must be 'none' or 'absolute', got {position!r}.")
        inner = heads * dim_head
        self.position = position
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        # only the cross-attention (attn2) receives the image tokens (VideoCrafter1 I2V)
        cross = {"image_context": image_context, "text_context_len": text_context_len, "image_scale": image_scale}
        self.blocks = nn.ModuleList([
            TransformerBlock(inner, heads, dim_head, context_dim, dropout, cross_options=cross)
            for _ in range(depth)
        ])
        self.proj_out = nn.Linear(inner, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        bt, c, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(bt, h * w, c)  # (b*t, h*w, c), per-frame norm
        tokens = self.proj_in(tokens)
        if self.position == "absolute":  # Latte's 2-D sin-cos table, added to every pixel's token
            tokens = tokens + sincos_2d_positions(h, w, tokens.shape[-1], tokens.device, tokens.dtype)
        for block in self.blocks:
            tokens = block(tokens, context)
        tokens = self.proj_out(tokens)  # (b*t, h*w, c)
        return x + tokens.reshape(bt, h, w, c).permute(0, 3, 1, 2)


class TemporalTransformer(nn.Module):
    """Attention over the frames at each pixel (both attentions self-attention).

    ``forward(x (b*t, c, h, w), frames=t) -> (b*t, c, h, w)``. ``position`` is one of
    ``"none"`` (VideoCrafter2), ``"relative"`` (VideoCrafter1) or ``"rope_bias"`` (LaVie).
    """

    def __init__(self, channels: int, heads: int, dim_head: int, depth: int = 1, dropout: float = 0.0,
                 norm_groups: int = 32, position: str = "none", max_distance: int = 16,
                 rotary_dim: int = 32, bias_buckets: int = 32, bias_max_distance: int = 32):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        options = {"position": position, "max_distance": max_distance, "rotary_dim": rotary_dim,
                   "bias_buckets": bias_buckets, "bias_max_distance": bias_max_distance}
        self.blocks = nn.ModuleList([
            TransformerBlock(inner, heads, dim_head, None, dropout, attn_options=options) for _ in range(depth)
        ])
        self.proj_out = nn.Linear(inner, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def to_sequences(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """Normalise over all frames, then ``(b*t, c, h, w) -> (b*h*w, t, c)``."""
        c = x.shape[1]
        video = self.norm(frames_as_rows(x, frames))  # (b, c, t, h*w): statistics over (c/g, t, h, w)
        return video.permute(0, 3, 2, 1).reshape(-1, frames, c)  # (b*h*w, t, c)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        bt, c, h, w = x.shape
        seq = self.proj_in(self.to_sequences(x, frames))  # (b*h*w, t, inner)
        for block in self.blocks:
            seq = block(seq)
        seq = self.proj_out(seq)  # (b*h*w, t, c)
        out = seq.reshape(bt // frames, h * w, frames, c).permute(0, 3, 2, 1)  # (b, c, t, h*w)
        return x + rows_as_frames(out, h, w)
