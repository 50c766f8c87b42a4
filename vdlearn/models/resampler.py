"""The Resampler: 257 CLIP image tokens -> 16 learned query tokens for the U-Net's image cross-attention.

VideoCrafter1's image-to-video model (arXiv 2310.19512, its image-conditioning branch)
does not hand the 257 x 1280 OpenCLIP ViT-H image tokens to the U-Net directly.
A small query transformer, the Perceiver Resampler of Flamingo (Alayrac et al. 2022,
section 2.1) in the form IP-Adapter uses (Ye et al. 2023), distils them into
16 tokens of the text width 1024:

* 16 learned **queries** ``(1, 16, dim)`` are the only thing that flows through the layers;
  the image tokens are projected once, ``proj_in``: 1280 -> dim;
* each of ``depth`` layers is ``q + attn(q, image)`` then ``q + ff(q)``. The attention
  normalises both inputs (``norm_image``, ``norm_queries``), takes queries from the 16
  tokens and keys/values from **the image tokens and the queries concatenated** (so the
  queries also attend to each other), with no biases anywhere. The feed-forward is
  LayerNorm -> Linear (x ff_mult, no bias) -> GELU -> Linear (no bias);
* ``proj_out`` (dim -> output_dim) and a final LayerNorm ``norm_out``.

The I2V U-Net then reads one context of 93 tokens: the 77 text tokens of
:class:`~vdlearn.models.clip.OpenCLIPTextEncoder` **followed by** these 16 image tokens,
``torch.cat([text, image], dim=1)``; its spatial cross-attention splits them at the fixed
length 77. The unconditional context is the embedding of ``""`` followed by the Resampler
output of the unconditional (mid-grey) image.

The official hard-codes ``Resampler(dim=1024, depth=4, dim_head=64, heads=12,
num_queries=16, embedding_dim=1280, output_dim=1024, ff_mult=4)``
(``lvdm/models/ddpm3d.py``, ``LatentVisualDiffusion``; module
``lvdm/modules/encoders/ip_resampler.py``): preset ``videocrafter1_i2v``. Note the inner
width 12 x 64 = 768 is smaller than ``dim``. Official names are translated by
:mod:`vdlearn.pretrained.openclip`. Taught in notebook 10_pretrained.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vdlearn.io import InputError


@dataclass
class ResamplerConfig:
    """Everything that shapes a :class:`Resampler`. Presets: :data:`RESAMPLER_PRESETS`."""

    name: str = "custom"
    dim: int = 1024  # width of the queries inside the layers
    depth: int = 4
    dim_head: int = 64
    heads: int = 12
    num_queries: int = 16  # tokens out
    embedding_dim: int = 1280  # width of the image tokens in (the CLIP image tower's width)
    output_dim: int = 1024  # width of the tokens out (the U-Net's context width)
    ff_mult: int = 4

    @classmethod
    def preset(cls, name: str, **overrides) -> ResamplerConfig:
        """A named preset (see :data:`RESAMPLER_PRESETS`), with fields overridden by keyword."""
        if name not in RESAMPLER_PRESETS:
            raise KeyError(f"Unknown resampler preset {name!r}. Available: {', '.join(RESAMPLER_PRESETS)}.")
        return dataclasses.replace(RESAMPLER_PRESETS[name], name=name, **overrides)


#: Named configurations. Presets are data.
RESAMPLER_PRESETS: dict[str, ResamplerConfig] = {
    "videocrafter1_i2v": ResamplerConfig(),
    # reduced width for tests: image width 160 in, context width 128 out
    "reduced": ResamplerConfig(dim=128, depth=2, dim_head=64, heads=3, embedding_dim=160, output_dim=128),
}


class QueryAttention(nn.Module):
    """Queries attend to ``[image tokens, queries]``; no biases (the official ``PerceiverAttention``)."""

    def __init__(self, dim: int, dim_head: int, heads: int):
        super().__init__()
        self.heads = heads
        inner = dim_head * heads
        self.norm_image = nn.LayerNorm(dim)
        self.norm_queries = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)  # rows: all k, then all v
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, image: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        image = self.norm_image(image)  # (b, n, dim)
        queries = self.norm_queries(queries)  # (b, m, dim)
        b, m, _ = queries.shape

        def heads(t: torch.Tensor) -> torch.Tensor:  # (b, l, inner) -> (b, heads, l, dim_head)
            return t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2)

        k, v = self.to_kv(torch.cat([image, queries], dim=1)).chunk(2, dim=-1)  # (b, n + m, inner) each
        out = F.scaled_dot_product_attention(heads(self.to_q(queries)), heads(k), heads(v))  # (b, h, m, d)
        return self.to_out(out.transpose(1, 2).reshape(b, m, -1))


class FeedForward(nn.Module):
    """LayerNorm -> Linear (no bias) -> GELU -> Linear (no bias)."""

    def __init__(self, dim: int, mult: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * mult, bias=False)
        self.fc2 = nn.Linear(dim * mult, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class ResamplerLayer(nn.Module):
    def __init__(self, c: ResamplerConfig):
        super().__init__()
        self.attn = QueryAttention(c.dim, c.dim_head, c.heads)
        self.ff = FeedForward(c.dim, c.ff_mult)

    def forward(self, image: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        queries = queries + self.attn(image, queries)
        return queries + self.ff(queries)


class Resampler(nn.Module):
    """``(b, n, embedding_dim)`` image tokens -> ``(b, num_queries, output_dim)``.

    >>> Resampler(ResamplerConfig.preset("reduced"))(torch.randn(2, 257, 160)).shape
    torch.Size([2, 16, 128])
    """

    def __init__(self, config: ResamplerConfig | str = "videocrafter1_i2v"):
        super().__init__()
        if isinstance(config, str):
            config = ResamplerConfig.preset(config)
        self.config = c = config
        self.queries = nn.Parameter(torch.randn(1, c.num_queries, c.dim) / c.dim**0.5)  # (1, 16, dim)
        self.proj_in = nn.Linear(c.embedding_dim, c.dim)
        self.layers = nn.ModuleList(ResamplerLayer(c) for _ in range(c.depth))
        self.proj_out = nn.Linear(c.dim, c.output_dim)
        self.norm_out = nn.LayerNorm(c.output_dim)

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        c = self.config
        if image_tokens.ndim != 3 or image_tokens.shape[-1] != c.embedding_dim:
            raise InputError(f"Expected image tokens of shape (b, n, {c.embedding_dim}) (the CLIP image tower's "
                             f"output), got {tuple(image_tokens.shape)}.")
        image = self.proj_in(image_tokens.to(self.proj_in.weight.dtype))  # (b, n, dim)
        queries = self.queries.expand(image.shape[0], -1, -1)  # (b, 16, dim)
        for layer in self.layers:
            queries = layer(image, queries)
        return self.norm_out(self.proj_out(queries))  # (b, 16, output_dim)
