"""The autoencoder's four building blocks: ResnetBlock, self-attention, down- and upsampling.

LDM's autoencoder (Rombach et al. 2022, sec. 3.1 and appendix G) reuses the
convolutional pieces of DDPM's U-Net (Ho et al. 2020) and VQGAN (Esser et al. 2021),
without a timestep input:

* :class:`ResnetBlock`: ``x + conv(silu(norm(conv(silu(norm(x))))))``; a 1x1 conv on the
  skip path when the width changes.
* :class:`SelfAttention`: one-head attention over all pixels of a frame, used once in
  the middle of encoder and decoder (the only place where one pixel sees the whole frame).
* :class:`Downsample`: a stride-2 3x3 conv after padding one pixel on the right and bottom
  only (so ``h -> h / 2`` exactly, as in the original code).
* :class:`Upsample`: nearest-neighbour 2x, then a 3x3 conv.

Every block works on single frames, ``(n, c, h, w)``; the video autoencoder folds
time into the batch (``n = b * t``). Taught in ``notebooks/02_latent_space.ipynb``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int, groups: int, eps: float) -> nn.GroupNorm:
    """GroupNorm with learned scale and shift (LDM's ``Normalize``)."""
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=eps, affine=True)


class ResnetBlock(nn.Module):
    """Two (norm -> SiLU -> 3x3 conv) stages plus a skip connection."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, eps: float, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_channels, groups, eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = group_norm(out_channels, groups, eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        # A 1x1 conv matches widths on the skip path ("nin_shortcut" in LDM).
        self.skip = nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (n, c_in, h, w)
        h = self.conv1(F.silu(self.norm1(x)))  # (n, c_out, h, w)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))  # (n, c_out, h, w)
        if self.skip is not None:
            x = self.skip(x)
        return x + h


class SelfAttention(nn.Module):
    r"""Single-head self-attention over the pixels of one frame, with a residual connection.

    $\mathrm{out} = x + W_o\,\mathrm{softmax}(QK^\top/\sqrt{c})\,V$ with $Q, K, V = W_{q,k,v}\,\mathrm{norm}(x)$.
    The projections are per-pixel linear maps (LDM stores them as 1x1 convs, diffusers as
    Linear layers; the weights are the same numbers, see ``vdlearn.pretrained.vae_layouts``).
    """

    def __init__(self, channels: int, groups: int, eps: float):
        super().__init__()
        self.norm = group_norm(channels, groups, eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (n, c, h, w)
        n, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (n, h*w, c): one token per pixel
        q, k, v = self.to_q(tokens), self.to_k(tokens), self.to_v(tokens)  # (n, h*w, c) each
        # softmax(q k^T / sqrt(c)) v, computed without materialising the (h*w, h*w) matrix when possible.
        attended = F.scaled_dot_product_attention(q, k, v)  # (n, h*w, c)
        out = self.to_out(attended).transpose(1, 2).reshape(n, c, h, w)  # (n, c, h, w)
        return x + out


class Downsample(nn.Module):
    """Halve height and width with a stride-2 conv (pad right/bottom by one pixel first)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (n, c, h, w)
        x = F.pad(x, (0, 1, 0, 1))  # (n, c, h+1, w+1): asymmetric, as in LDM and diffusers
        return self.conv(x)  # (n, c, h/2, w/2)


class Upsample(nn.Module):
    """Double height and width: nearest-neighbour copy, then a 3x3 conv to smooth."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (n, c, h, w)
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # (n, c, 2h, 2w)
        return self.conv(x)


class MidBlock(nn.Module):
    """ResnetBlock -> SelfAttention -> ResnetBlock at the lowest resolution."""

    def __init__(self, channels: int, groups: int, eps: float, dropout: float, attention: bool):
        super().__init__()
        self.res1 = ResnetBlock(channels, channels, groups, eps, dropout)
        self.attn = SelfAttention(channels, groups, eps) if attention else None
        self.res2 = ResnetBlock(channels, channels, groups, eps, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (n, c, h, w)
        x = self.res1(x)
        if self.attn is not None:
            x = self.attn(x)
        return self.res2(x)


__all__ = ["Downsample", "MidBlock", "ResnetBlock", "SelfAttention", "Upsample", "group_norm"]


def frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    """Fold time into the batch: ``(b, c, t, h, w) -> (b*t, c, h, w)`` (frame-major within each clip)."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def batch_to_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Unfold time from the batch: ``(b*t, c, h, w) -> (b, c, t, h, w)``; inverse of :func:`frames_to_batch`."""
    n, c, h, w = x.shape
    if n % num_frames:
        raise ValueError(f"A batch of {n} frames cannot be split into clips of {num_frames} frames.")
    return x.reshape(n // num_frames, num_frames, c, h, w).permute(0, 2, 1, 3, 4)


__all__ += ["batch_to_frames", "frames_to_batch"]
