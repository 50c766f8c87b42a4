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
Stable Diffusion 1.x (and so LaVie) projects with 1x1 convolutions instead of linear layers
(diffusers' ``use_linear_projection=False``): the same map on every pixel, stored as
``(out, in, 1, 1)`` weights (``projection="conv"``).

**LaVie** (arXiv 2309.15103, sec. 3.1; ``base/models/attention.py`` and
``interpolation/models/attention.py`` of Vchitect/LaVie) has no separate temporal
transformer. Its temporal layer lives *inside* every spatial transformer block
(:class:`BlockTemporalAttention`): the block's ``h*w`` tokens of each frame are regrouped
into one sequence of ``t`` frames per token, ``(b*t, h*w, c) -> (b*h*w, t, c)``, and::

    base:           x = x + attn1(LN(x));  x = x + attn2(LN(x), ctx);  x = x + temp(LN(x));  x = x + FF(LN(x))
    interpolation:  x = x + attn1(LN(x));  x = x + attn2(LN(x), ctx);  x = x + FF(LN(x));    x = x + temp(LN(x))

The base model's temporal attention carries rotary positions and a T5 bias
(``position="rope_bias"``); the interpolation model's has none. The interpolation model's
``attn1`` is *sparse-causal* (:func:`sparse_causal_context`): frame ``i`` attends to the
pixels of frame 0 and of frame ``i-1`` (``[0, 0]`` for frame 0), not to its own.

LaVie's **video super-resolution** U-Net (Wang et al. 2023, arXiv 2309.15103; ``vsr/models/attention.py``
of Vchitect/LaVie), built on Stable Diffusion's x4 upscaler, keeps the base model's block order
(temporal attention with rotary positions and T5 bias after ``attn2``) and adds two things:

* every spatial transformer opens with a :class:`~vdlearn.models.unet.resblock.TemporalResBlock`
  (official ``resblock_temporal``: two Conv3d ``(3,1,1)`` along time, residual), run *before* the
  transformer's own GroupNorm; the transformer's residual is taken after it (``temporal_conv=True``);
* in some levels ``attn1`` is a second cross-attention to the text instead of a self-attention over
  the pixels (diffusers' ``only_cross_attention``, ``cross_only=True``): the upscaler's three widest
  levels, where ``h*w`` tokens are many::

      cross_only:   x = x + attn1(LN(x), ctx);  x = x + attn2(LN(x), ctx);  x = x + temp(LN(x));  x = x + FF(LN(x))

Taught in ``notebooks/04_temporal_unet.ipynb``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vdlearn.models.unet.attention import Attention
from vdlearn.models.unet.positions import sincos_2d_positions
from vdlearn.models.unet.resblock import (
    TemporalResBlock,
    apply_to_video_frames,
    frames_as_rows,
    rows_as_frames,
)


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


#: Where a transformer block may hold LaVie's temporal attention: nowhere, after the cross-attention
#: (LaVie base) or after the feed-forward (LaVie interpolation).
BLOCK_TEMPORAL_KINDS = ("none", "after_cross", "after_ff")


def sparse_causal_context(tokens: torch.Tensor, frames: int, num_images: int = 0) -> torch.Tensor:
    """The keys/values of sparse-causal attention: frame 0's and frame ``i-1``'s tokens for every frame ``i``.

    ``tokens (b*t, L, c) -> (b*t, 2L, c)``. Frame 0 sees ``[frame 0, frame 0]``. The last
    ``num_images`` frames are independent images and see ``[themselves, themselves]``: the same
    softmax as plain self-attention (duplicating every key-value pair changes no weight); in
    image mode (all frames images) the tokens are returned as they are. Projecting the gathered
    tokens equals gathering projected keys and values (LaVie's ``SparseCausalAttention``),
    since ``to_k`` and ``to_v`` act on each token alone.
    """
    video = frames - num_images
    if video <= 0:
        return tokens
    per_video = tokens.unflatten(0, (-1, frames))  # (b, t, L, c)
    index = torch.arange(frames, device=tokens.device)
    first = torch.where(index < video, 0, index)  # (t,): frame 0 for video frames
    previous = torch.where(index < video, (index - 1).clamp(min=0), index)  # (t,): frame i-1
    return torch.cat([per_video[:, first], per_video[:, previous]], dim=2).flatten(0, 1)  # (b*t, 2L, c)


class BlockTemporalAttention(nn.Module):
    """LaVie's temporal layer inside a transformer block: ``x + attn(LN(x))`` across the frames of every token.

    ``forward(x (b*t, L, c), frames=t, num_images=0) -> (b*t, L, c)``; the last ``num_images``
    frames (independent images) pass unchanged. Its output projection starts at zero (weight
    and bias): inserted into a trained image model, the layer is the identity.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0, attn_options: dict | None = None):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, None, heads, dim_head, dropout, **(attn_options or {}))
        nn.init.zeros_(self.attn.to_out.weight)
        nn.init.zeros_(self.attn.to_out.bias)

    def forward(self, x: torch.Tensor, frames: int, num_images: int = 0) -> torch.Tensor:
        bt, length, c = x.shape
        video = frames - num_images
        if video <= 0:  # image mode
            return x
        per_token = x.unflatten(0, (-1, frames)).transpose(1, 2)  # (b, L, t, c)
        seq = per_token[:, :, :video].reshape(-1, video, c)  # (b*L, t_video, c): one sequence per token
        seq = seq + self.attn(self.norm(seq))
        out = seq.reshape(bt // frames, length, video, c)  # (b, L, t_video, c)
        if num_images:
            out = torch.cat([out, per_token[:, :, video:]], dim=2)
        return out.transpose(1, 2).reshape(bt, length, c)  # (b*t, L, c)


class TransformerBlock(nn.Module):
    """Pre-norm block: self-attention, cross- (or second self-) attention, GEGLU feed-forward.

    Optionally (LaVie) a :class:`BlockTemporalAttention` after the cross-attention or after the
    feed-forward (``temporal``), and a sparse-causal ``attn1`` (``sparse_causal``); both need
    ``frames`` in :meth:`forward`. ``cross_only`` (LaVie VSR, SD x4 upscaler) makes ``attn1`` a
    cross-attention to the context as well.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int | None = None,
                 dropout: float = 0.0, attn_options: dict | None = None, cross_options: dict | None = None,
                 temporal: str = "none", temporal_options: dict | None = None, sparse_causal: bool = False,
                 cross_only: bool = False):
        """``attn_options`` go to both attentions (positions); ``cross_options`` to ``attn2`` only;
        ``temporal_options`` (positions) to the in-block temporal attention."""
        super().__init__()
        if temporal not in BLOCK_TEMPORAL_KINDS:
            raise ValueError(f"temporal must be one of {BLOCK_TEMPORAL_KINDS}, got {temporal!r}.")
        if cross_only and (sparse_causal or context_dim is None):
            raise ValueError("cross_only makes attn1 a cross-attention: it needs a context_dim and excludes "
                             "sparse_causal.")
        attn_options, cross_options = attn_options or {}, cross_options or {}
        self.sparse_causal = sparse_causal
        self.cross_only = cross_only
        self.norm1 = nn.LayerNorm(dim)
        # sparse-causal: keys/values come from other frames' tokens of the same width, passed as a context;
        # cross_only: from the text tokens
        kv_dim = dim if sparse_causal else context_dim if cross_only else None
        self.attn1 = Attention(dim, kv_dim, heads, dim_head, dropout, **attn_options)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, context_dim, heads, dim_head, dropout, **attn_options, **cross_options)
        self.temporal_placement = temporal
        self.temporal = (BlockTemporalAttention(dim, heads, dim_head, dropout, temporal_options)
                         if temporal != "none" else None)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = GEGLUFeedForward(dim, dropout=dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, frames: int | None = None,
                num_images: int = 0) -> torch.Tensor:
        if (self.sparse_causal or self.temporal is not None) and frames is None:
            raise ValueError("This transformer block looks across frames (sparse-causal or temporal attention): "
                             "pass frames=t with x of shape (b*t, L, c).")
        if self.sparse_causal:
            h = self.norm1(x)  # (b*t, L, dim)
            x = x + self.attn1(h, sparse_causal_context(h, frames, num_images))
        elif self.cross_only:  # LaVie VSR / SD x4 upscaler: attn1 attends to the text too
            x = x + self.attn1(self.norm1(x), context)  # (B, L, dim)
        else:
            x = x + self.attn1(self.norm1(x))  # (B, L, dim)
        x = x + self.attn2(self.norm2(x), context)
        if self.temporal_placement == "after_cross":
            x = self.temporal(x, frames, num_images)
        x = x + self.ff(self.norm3(x))
        if self.temporal_placement == "after_ff":
            x = self.temporal(x, frames, num_images)
        return x


class SpatialTransformer(nn.Module):
    """Attention over the pixels of each frame, with cross-attention to ``context``.

    ``forward(x (b*t, c, h, w), context (b, n, d) | (b*t, n, d) | None, frames=None, num_images=0)
    -> (b*t, c, h, w)``. ``position="absolute"`` adds Latte's 2-D sin-cos positions to the tokens
    after ``proj_in`` (the papers' U-Nets: ``"none"``). ``projection`` is ``"linear"``
    (VideoCrafter, SD 2.x) or ``"conv"`` (1x1 convolutions, SD 1.x and LaVie). LaVie's options,
    ``block_temporal`` (see :data:`BLOCK_TEMPORAL_KINDS`, positions in ``temporal_options``) and
    ``sparse_causal``, look across frames and need ``frames``. LaVie VSR's options: ``cross_only``
    (``attn1`` attends to the context) and ``temporal_conv`` (a :class:`TemporalResBlock` along time
    before everything else; it skips the last ``num_images`` frames).
    """

    def __init__(self, channels: int, heads: int, dim_head: int, depth: int = 1,
                 context_dim: int | None = None, dropout: float = 0.0, norm_groups: int = 32,
                 image_context: bool = False, text_context_len: int = 77, image_scale: float = 1.0,
                 position: str = "none", projection: str = "linear", block_temporal: str = "none",
                 temporal_options: dict | None = None, sparse_causal: bool = False, cross_only: bool = False,
                 temporal_conv: bool = False):
        super().__init__()
        if position not in ("none", "absolute"):
            raise ValueError(f"Spatial positions must be 'none' or 'absolute', got {position!r}.")
        if projection not in ("linear", "conv"):
            raise ValueError(f"projection must be 'linear' or 'conv', got {projection!r}.")
        inner = heads * dim_head
        self.position = position
        self.projection = projection
        # LaVie VSR: Conv3d (3,1,1) x2 along time, residual, no embedding (official resblock_temporal)
        self.temporal_conv = TemporalResBlock(channels, 3, None, norm_groups, dropout) if temporal_conv else None
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner) if projection == "linear" else nn.Conv2d(channels, inner, 1)
        # only the cross-attention (attn2) receives the image tokens (VideoCrafter1 I2V)
        cross = {"image_context": image_context, "text_context_len": text_context_len, "image_scale": image_scale}
        self.blocks = nn.ModuleList([
            TransformerBlock(inner, heads, dim_head, context_dim, dropout, cross_options=cross,
                             temporal=block_temporal, temporal_options=temporal_options, sparse_causal=sparse_causal,
                             cross_only=cross_only)
            for _ in range(depth)
        ])
        self.proj_out = nn.Linear(inner, channels) if projection == "linear" else nn.Conv2d(inner, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, frames: int | None = None,
                num_images: int = 0) -> torch.Tensor:
        bt, c, h, w = x.shape
        if self.temporal_conv is not None:  # LaVie VSR: along time first; the residual below starts after it
            if frames is None:
                raise ValueError("This spatial transformer opens with a temporal convolution: pass frames=t.")
            x = apply_to_video_frames(self.temporal_conv, x, frames, num_images)  # (b*t, c, h, w)
        if self.projection == "conv":  # SD 1.x: 1x1 convolution, then tokens
            projected = self.proj_in(self.norm(x))  # (b*t, inner, h, w), per-frame norm
            tokens = projected.permute(0, 2, 3, 1).reshape(bt, h * w, projected.shape[1])  # (b*t, h*w, inner)
        else:
            tokens = self.norm(x).permute(0, 2, 3, 1).reshape(bt, h * w, c)  # (b*t, h*w, c), per-frame norm
            tokens = self.proj_in(tokens)
        if self.position == "absolute":  # Latte's 2-D sin-cos table, added to every pixel's token
            tokens = tokens + sincos_2d_positions(h, w, tokens.shape[-1], tokens.device, tokens.dtype)
        for block in self.blocks:
            tokens = block(tokens, context, frames, num_images)
        if self.projection == "conv":
            return x + self.proj_out(tokens.reshape(bt, h, w, -1).permute(0, 3, 1, 2))  # (b*t, c, h, w)
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
