"""The encoder: frames -> the parameters of a Gaussian over latents.

LDM (Rombach et al. 2022, sec. 3.1, appendix G): ``conv_in``, then one *level* per
entry of ``channel_mult`` (``num_res_blocks`` ResnetBlocks, then a stride-2
downsample except after the last level), a middle block (ResnetBlock, attention,
ResnetBlock), and GroupNorm -> SiLU -> ``conv_out`` to ``2 * z_channels`` maps: the
mean and the log-variance of each latent (``double_z``).

For SD's KL-f8: (n, 3, 512, 512) -> widths 128, 256, 512, 512 at 512, 256, 128, 64 px
-> (n, 8, 64, 64). Taught in ``notebooks/02_latent_space.ipynb``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vdlearn.models.vae.blocks import Downsample, MidBlock, ResnetBlock, group_norm
from vdlearn.models.vae.config import VAEConfig


class EncoderLevel(nn.Module):
    """ResnetBlocks at one resolution, then (optionally) a downsample."""

    def __init__(self, in_channels: int, out_channels: int, cfg: VAEConfig, downsample: bool):
        super().__init__()
        widths = [in_channels] + [out_channels] * cfg.num_res_blocks
        self.res = nn.ModuleList(
            ResnetBlock(widths[j], widths[j + 1], cfg.norm_groups, cfg.norm_eps, cfg.dropout)
            for j in range(cfg.num_res_blocks)
        )
        self.downsample = Downsample(out_channels) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, c_in, h, w)
        for block in self.res:
            x = block(x)  # (n, c_out, h, w)
        if self.downsample is not None:
            x = self.downsample(x)  # (n, c_out, h/2, w/2)
        return x


class Encoder(nn.Module):
    """Frames ``(n, 3, H, W)`` -> moments ``(n, 2*z, H/f, W/f)`` (or ``(n, z, ...)`` if not double_z)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        in_widths = [cfg.base_channels] + widths[:-1]  # level i starts at the width level i-1 ended with
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.base_channels, kernel_size=3, padding=1)
        last = len(widths) - 1
        self.down = nn.ModuleList(
            EncoderLevel(in_widths[i], widths[i], cfg, downsample=i != last) for i in range(len(widths))
        )
        self.mid = MidBlock(widths[-1], cfg.norm_groups, cfg.norm_eps, cfg.dropout, cfg.mid_attention)
        self.norm_out = group_norm(widths[-1], cfg.norm_groups, cfg.norm_eps)
        out = 2 * cfg.z_channels if cfg.double_z else cfg.z_channels
        self.conv_out = nn.Conv2d(widths[-1], out, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (n, 3, H, W)
        h = self.conv_in(x)  # (n, ch, H, W)
        for level in self.down:
            h = level(h)  # width grows, size halves at every level but the last
        h = self.mid(h)  # (n, ch*mult[-1], H/f, W/f)
        return self.conv_out(F.silu(self.norm_out(h)))  # (n, 2*z, H/f, W/f)


__all__ = ["Encoder", "EncoderLevel"]
