"""Multi-head attention, as the video U-Net uses it (self, cross, dual cross, temporal).

One class serves every attention in the U-Net::

    Attention(x, context) = to_out( softmax(Q K^T / sqrt(d)) V ),
    Q = x W_q,  K = c W_k,  V = c W_v,   c = context if given else x

with ``heads`` independent heads of ``dim_head`` channels, q/k/v projections without
bias and an output projection with bias (Stable Diffusion / VideoCrafter layout). The
core product runs through :func:`torch.nn.functional.scaled_dot_product_attention`
(fused kernels on CPU and GPU). Options:

* **cross-attention**: ``context_dim`` set; keys and values come from the text tokens.
  A context holding one caption per *video* is shared by all its frames without being
  copied: the frames are folded into the query sequence instead (the same numbers as
  VideoCrafter's ``repeat_interleave`` over frames).
* **dual cross-attention** (VideoCrafter1 I2V, arXiv 2310.19512, image-conditional
  branch): the context is ``[77 text tokens, image tokens]``; the image tokens get their
  own key/value projections ``to_k_ip, to_v_ip`` and the two results are summed::

      out = attn(q, K_txt, V_txt) + image_scale * attn(q, K_img, V_img)     # image_scale = 1.0

* **positions** for temporal attention (see :mod:`vdlearn.models.unet.positions`):
  ``"none"``, ``"relative"`` (Shaw, VideoCrafter1: explicit logits, since the value term
  needs the probabilities) or ``"rope_bias"`` (LaVie: rotary q/k, plus a bias passed to
  SDPA as an additive ``attn_mask``) or ``"absolute"`` (AnimateDiff: the frame-index
  sinusoid added to the attention's input).

Taught in ``notebooks/04_temporal_unet.ipynb``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vdlearn.models.unet.positions import (
    PartialRotaryEmbedding,
    ShawRelativePosition,
    T5RelativeBias,
    sinusoidal_positions,
)

POSITION_KINDS = ("none", "relative", "rope_bias", "absolute")


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw) -> torch.Tensor:
    """:func:`~torch.nn.functional.scaled_dot_product_attention`, in fp32 for bf16 inputs on a CPU.

    Under bf16 autocast on a CPU, PyTorch's flash-attention backward in bf16 is several times
    slower than in fp32 (measured on the toy U-Net's heads: 11 ms against 1.6 ms a call), while
    the matrix products and convolutions around it gain from bf16. So on a CPU the product
    runs in fp32 and its result is cast back; elsewhere this is SDPA unchanged.
    """
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        with torch.autocast("cpu", enabled=False):
            mask = kw.get("attn_mask")
            if mask is not None and mask.is_floating_point():
                kw["attn_mask"] = mask.float()
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kw).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, **kw)


class Attention(nn.Module):
    """Multi-head attention over ``x (B, L, query_dim)`` with optional ``context (B', N, context_dim)``.

    ``B'`` may equal ``B`` or divide it (one context per video, ``B = B' * frames``).
    """

    def __init__(
        self,
        query_dim: int,
        context_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
        position: str = "none",
        max_distance: int = 16,
        rotary_dim: int = 32,
        bias_buckets: int = 32,
        bias_max_distance: int = 32,
        image_context: bool = False,
        text_context_len: int = 77,
        image_scale: float = 1.0,
    ):
        super().__init__()
        if position not in POSITION_KINDS:
            raise ValueError(f"position must be one of {POSITION_KINDS}, got {position!r}.")
        inner = heads * dim_head
        kv_dim = context_dim if context_dim is not None else query_dim
        self.heads, self.dim_head, self.scale = heads, dim_head, dim_head**-0.5
        self.context_dim = context_dim
        self.position = position
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(kv_dim, inner, bias=False)
        self.to_v = nn.Linear(kv_dim, inner, bias=False)
        self.to_out = nn.Linear(inner, query_dim)
        self.dropout = nn.Dropout(dropout)

        self.image_context = image_context
        self.text_context_len, self.image_scale = text_context_len, image_scale
        if image_context:
            if context_dim is None:
                raise ValueError("Dual (text + image) cross-attention needs a context_dim.")
            self.to_k_ip = nn.Linear(context_dim, inner, bias=False)
            self.to_v_ip = nn.Linear(context_dim, inner, bias=False)

        if position == "relative":  # VideoCrafter1: Shaw tables for keys and values
            self.rel_pos_k = ShawRelativePosition(dim_head, max_distance)
            self.rel_pos_v = ShawRelativePosition(dim_head, max_distance)
        elif position == "rope_bias":  # LaVie: rotary on part of each head + T5 bucket bias
            self.rotary = PartialRotaryEmbedding(min(rotary_dim, dim_head))
            self.rel_bias = T5RelativeBias(heads, bias_buckets, bias_max_distance)

    # -- helpers ------------------------------------------------------------------------
    def _split(self, t: torch.Tensor) -> torch.Tensor:
        """``(B, L, heads*d) -> (B, heads, L, d)``."""
        return t.unflatten(-1, (self.heads, self.dim_head)).transpose(1, 2)

    @staticmethod
    def _merge(t: torch.Tensor) -> torch.Tensor:
        """``(B, heads, L, d) -> (B, L, heads*d)``."""
        return t.transpose(1, 2).flatten(2)

    def _check_context(self, x: torch.Tensor, context: torch.Tensor | None) -> None:
        if self.context_dim is None:
            return
        if context is None:
            raise ValueError(
                f"This cross-attention layer needs a context (b, n, {self.context_dim}) (e.g. text embeddings), "
                f"got None. Pass context=..., or build the model with context_dim=None for no conditioning."
            )
        if context.ndim != 3 or context.shape[-1] != self.context_dim:
            raise ValueError(
                f"Expected a context of shape (batch, tokens, {self.context_dim}), got {tuple(context.shape)}. "
                f"Check that the text encoder's width matches the model's context_dim."
            )
        if x.shape[0] % context.shape[0]:
            raise ValueError(
                f"The context batch ({context.shape[0]}) must equal or divide the query batch ({x.shape[0]}): "
                f"one context per video or one per frame."
            )
        if self.image_context and context.shape[1] <= self.text_context_len:
            raise ValueError(
                f"Dual cross-attention expects {self.text_context_len} text tokens followed by image tokens, "
                f"got only {context.shape[1]} tokens. Concatenate [text_embeddings, image_tokens] on dim 1."
            )

    def _qkv(self, x, context):
        """Projected and head-split q, k, v (+ image k, v), and the original query batch size."""
        src = x if context is None else context
        if self.image_context:
            src, img = src[:, : self.text_context_len], src[:, self.text_context_len :]
        q = self._split(self.to_q(x))  # (B', h, L', d)
        k = self._split(self.to_k(src))  # (B', h, N, d)
        v = self._split(self.to_v(src))
        kv_img = None
        if self.image_context:
            kv_img = self._split(self.to_k_ip(img)), self._split(self.to_v_ip(img))
        return q, k, v, kv_img

    def _fold(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """One context per video, queries per frame: fold the frames into the query sequence."""
        if context is not None and context.shape[0] != x.shape[0]:
            return x.reshape(context.shape[0], -1, x.shape[-1])  # (B', frames*L, D): a view, no copy
        return x

    # -- forward ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        self._check_context(x, context)
        if self.context_dim is None:
            context = None  # self-attention (the temporal transformer's second attention too)
        batch, length = x.shape[0], x.shape[1]
        if self.position == "absolute":  # AnimateDiff: x + pe enters q, k and v
            x = x + sinusoidal_positions(length, x.shape[-1], x.device, x.dtype)
        q, k, v, kv_img = self._qkv(self._fold(x, context), context)

        if self.position == "relative":
            out = self._shaw_attention(q, k, v)
        elif self.position == "rope_bias":
            q = self.rotary(q * self.scale)  # LaVie scales q before rotating
            k = self.rotary(k)
            bias = self.rel_bias(q.shape[-2]).to(q.dtype)  # (h, L, L)
            out = sdpa(q, k, v, attn_mask=bias, scale=1.0)
        else:
            out = sdpa(q, k, v)  # (B', h, L', d)
        if kv_img is not None:
            out = out + self.image_scale * sdpa(q, *kv_img)

        out = self._merge(out).reshape(batch, length, -1)  # (B, L, h*d)
        return self.dropout(self.to_out(out))

    def _shaw_attention(self, q, k, v):
        """Shaw relative attention with explicit logits (VideoCrafter1)."""
        length_q, length_k = q.shape[-2], k.shape[-2]
        rk = self.rel_pos_k(length_q, length_k).to(q.dtype)  # (Lq, Lk, d)
        rv = self.rel_pos_v(length_q, length_k).to(q.dtype)
        logits = (q @ k.transpose(-1, -2) + torch.einsum("bhid,ijd->bhij", q, rk)) * self.scale
        p = logits.softmax(dim=-1)  # (B, h, Lq, Lk)
        return p @ v + torch.einsum("bhij,ijd->bhid", p, rv)  # (B, h, Lq, d)

    @torch.no_grad()
    def attention_probs(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """The attention probabilities ``(B, heads, Lq, Lk)`` for inspection (text branch for dual).

        Computed explicitly with the same positions as :meth:`forward`; with a shared
        context the returned ``Lq`` is ``frames * L`` (frames folded into the queries).
        """
        self._check_context(x, context)
        if self.context_dim is None:
            context = None
        if self.position == "absolute":
            x = x + sinusoidal_positions(x.shape[1], x.shape[-1], x.device, x.dtype)
        q, k, _, _ = self._qkv(self._fold(x, context), context)
        if self.position == "relative":
            rk = self.rel_pos_k(q.shape[-2], k.shape[-2]).to(q.dtype)
            logits = (q @ k.transpose(-1, -2) + torch.einsum("bhid,ijd->bhij", q, rk)) * self.scale
        elif self.position == "rope_bias":
            q, k = self.rotary(q * self.scale), self.rotary(k)
            logits = q @ k.transpose(-1, -2) + self.rel_bias(q.shape[-2]).to(q.dtype)
        else:
            logits = (q @ k.transpose(-1, -2)) * self.scale
        return logits.softmax(dim=-1)
