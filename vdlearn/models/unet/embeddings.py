"""Timestep and fps embeddings: how a scalar condition enters the U-Net.

A diffusion U-Net must know *how noisy* its input is (the timestep t) and, in
VideoCrafter1 and VideoCrafter2, *how fast* the clip plays (frames per second). Both are scalars.
They are turned into vectors in two steps:

1. a fixed sinusoidal code (the Transformer position code of Vaswani et al. 2017,
   used for timesteps since DDPM): for frequencies
   ``f_i = max_period ** (-i / half)``, ``i = 0 .. half-1``::

       e(s) = [cos(s * f_0), ..., cos(s * f_{half-1}), sin(s * f_0), ..., sin(s * f_{half-1})]

   VideoCrafter puts the **cosines first** (``[cos, sin]``); diffusers calls this
   ``flip_sin_to_cos=True``. The order matters when loading official weights: the
   first linear layer's columns are tied to it.
2. a small MLP, ``Linear -> SiLU -> Linear``, that widens it to ``4 * model_channels``.

The fps embedding (VideoCrafter1, arXiv 2310.19512, sec. 3.2, "Denoising 3D U-Net";
VideoCrafter2, arXiv 2401.09047, keeps it) uses the same sinusoid and its own MLP; its
output is *added* to the timestep embedding, so every ResBlock sees "noise level + frame
rate" as one vector.

Taught in ``notebooks/04_temporal_unet.ipynb``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(values: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """The ``[cos, sin]`` sinusoidal code of ``values`` (shape ``(n,)``), shape ``(n, dim)``.

    ``values`` may be integer timesteps, fractional timesteps or fps values. Computed in
    float32 whatever the input dtype (half precision cannot hold ``999 * f_0`` exactly).
    """
    if values.ndim != 1:
        raise ValueError(
            f"sinusoidal_embedding expects a 1-D tensor of scalars (one per batch element), "
            f"got shape {tuple(values.shape)}. Flatten it first, e.g. values.reshape(-1)."
        )
    half = dim // 2
    # f_i = max_period^(-i/half), i = 0 .. half-1
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half
    freqs = torch.exp(exponent)  # (half,)
    args = values.float()[:, None] * freqs[None, :]  # (n, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (n, 2 * half)
    if dim % 2:  # odd width: pad one zero column
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class ScalarEmbedding(nn.Module):
    """Sinusoid then ``Linear -> SiLU -> Linear``: a scalar per sample -> a vector per sample.

    Used twice in the U-Net: for the diffusion timestep and for the fps.
    """

    def __init__(self, sinusoid_dim: int, embed_dim: int, max_period: float = 10000.0):
        super().__init__()
        self.sinusoid_dim = sinusoid_dim
        self.max_period = max_period
        self.linear_1 = nn.Linear(sinusoid_dim, embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        code = sinusoidal_embedding(values, self.sinusoid_dim, self.max_period)  # (n, sinusoid_dim)
        code = code.to(self.linear_1.weight.dtype)
        return self.linear_2(self.act(self.linear_1(code)))  # (n, embed_dim)
