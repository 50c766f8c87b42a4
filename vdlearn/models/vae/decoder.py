"""The decoder: latents -> frames, the encoder run backwards.

LDM (Rombach et al. 2022, sec. 3.1, appendix G): ``conv_in`` from ``z_channels`` to the
widest level, the middle block (ResnetBlock, attention, ResnetBlock), then one level per
entry of ``channel_mult`` from the lowest resolution up, each with
``num_res_blocks + 1`` ResnetBlocks and a nearest-neighbour 2x upsample (except the
last), and GroupNorm -> SiLU -> ``conv_out`` to RGB.

vdlearn numbers the levels in the order they run (``up.0`` is the 8x8 level of SD's
64x64 latents). The original code numbers them by resolution, so ``up.0`` there is the
*last* level; ``vdlearn.pretrained.vae_layouts`` translates. This decoder sees one frame
at a time; ``temporal_decoder.py`` adds layers that look across frames.
Taught in ``notebooks/02_latent_space.ipynb``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vdlearn.models.vae.blocks import MidBlock, ResnetBlock, Upsample, group_norm
from vdlearn.models.vae.config import VAEConfig


class DecoderLevel(nn.Module):
    """``num_res_blocks + 1`` ResnetBlocks at one resolution, then (optionally) an upsample."""

    def __init__(self, in_channels: int, out_channels: int, cfg: VAEConfig, upsample: bool):
        super().__init__()
        n = cfg.num_res_blocks + 1
        widths = [in_channels] + [out_channels] * n
        self.res = nn.ModuleList(
            ResnetBlock(widths[j], widths[j + 1], cfg.norm_groups, cfg.norm_eps, cfg.dropout) for j in range(n)
        )
        self.upsample = Upsample(out_channels) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, c_in, h, w)
        for block in self.res:
            x = block(x)  # (n, c_out, h, w)
        if self.upsample is not None:
            x = self.upsample(x)  # (n, c_out, 2h, 2w)
        return x


class Decoder(nn.Module):
    """Latents ``(n, z, h, w)`` -> frames ``(n, 3, h*f, w*f)``, one frame at a time."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        self.conv_in = nn.Conv2d(cfg.z_channels, widths[-1], kernel_size=3, padding=1)
        self.mid = MidBlock(widths[-1], cfg.norm_groups, cfg.norm_eps, cfg.dropout, cfg.mid_attention)
        levels = list(reversed(range(len(widths))))  # resolution order: lowest first
        self.up = nn.ModuleList(
            DecoderLevel(widths[min(i + 1, len(widths) - 1)], widths[i], cfg, upsample=i != 0) for i in levels
        )
        self.norm_out = group_norm(widths[0], cfg.norm_groups, cfg.norm_eps)
        self.conv_out = nn.Conv2d(widths[0], cfg.out_channels, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # z: (n, z, h, w)
        h = self.conv_in(z)  # (n, ch*mult[-1], h, w)
        h = self.mid(h)
        for level in self.up:
            h = level(h)  # width shrinks, size doubles at every level but the last
        return self.conv_out(F.silu(self.norm_out(h)))  # (n, 3, h*f, w*f)


__all__ = ["Decoder", "DecoderLevel"]
