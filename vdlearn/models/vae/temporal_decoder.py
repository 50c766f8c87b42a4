"""A decoder that looks across frames: VideoGen's enhanced video decoder.

Decoding each frame on its own (VideoCrafter, LaVie) is exact for latents the encoder
produced, but a diffusion model's latents are slightly off, and off *differently in
every frame*: the per-frame decoder turns that into flicker. VideoGen (Li et al. 2023,
arXiv 2309.00398, method section, the "enhanced video decoder") trains the decoder on
unlabeled video with temporal layers added; Stable Video Diffusion (Blattmann et al.
2023, arXiv 2311.15127; ``AutoencoderKLTemporalDecoder`` in diffusers) fine-tunes its
decoder the same way, with 3D-conv ResNet blocks blended into every decoder block.

vdlearn's version, readable in one screen:

* :class:`TemporalResBlock`: ``x + conv_t(silu(norm(conv_t(silu(norm(x))))))`` where
  ``conv_t`` is a Conv3d with kernel ``(k, 1, 1)`` (it mixes the same pixel across ``k``
  neighbouring frames) and GroupNorm statistics span all frames of the clip.
  The second conv starts at zero, so the block starts as the identity.
* :class:`TemporalDecoder`: the per-frame :class:`~vdlearn.models.vae.decoder.Decoder`
  (same weights, same key names) with a TemporalResBlock after every ResnetBlock and a
  zero-initialised residual temporal conv on the RGB output (SVD's ``time_conv_out``).
  Freshly built from a trained per-frame decoder it decodes *exactly* like it; training
  (``vdlearn.training.vae``, encoder frozen) then teaches the new layers to use time.

Taught in ``notebooks/02_latent_space.ipynb``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vdlearn.models.vae.blocks import batch_to_frames, frames_to_batch, group_norm
from vdlearn.models.vae.config import VAEConfig
from vdlearn.models.vae.decoder import Decoder


def temporal_conv(channels: int, kernel: int) -> nn.Conv3d:
    """Conv3d over time only: kernel ``(k, 1, 1)``, padded so the frame count is unchanged."""
    return nn.Conv3d(channels, channels, kernel_size=(kernel, 1, 1), padding=(kernel // 2, 0, 0))


class TemporalResBlock(nn.Module):
    """Residual block of two temporal convs; identity at initialisation."""

    def __init__(self, channels: int, groups: int, eps: float, kernel: int = 3):
        super().__init__()
        self.norm1 = group_norm(channels, groups, eps)
        self.conv1 = temporal_conv(channels, kernel)
        self.norm2 = group_norm(channels, groups, eps)
        self.conv2 = temporal_conv(channels, kernel)
        nn.init.zeros_(self.conv2.weight)  # start as the identity: the output equals the input
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (b, c, t, h, w)
        h = self.conv1(F.silu(self.norm1(x)))  # GroupNorm on 5-D input: statistics over all frames
        h = self.conv2(F.silu(self.norm2(h)))  # (b, c, t, h, w)
        return x + h


class TemporalOutConv(nn.Module):
    """``x + conv_t(x)`` on the decoded RGB frames, zero-initialised (a last smoothing over time)."""

    def __init__(self, channels: int, kernel: int = 3):
        super().__init__()
        self.conv = temporal_conv(channels, kernel)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (b, 3, t, h, w)
        return x + self.conv(x)


class TemporalLayers(nn.Module):
    """The layers the temporal decoder adds, laid out like the decoder's ResnetBlocks."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        g, eps, k = cfg.norm_groups, cfg.norm_eps, cfg.temporal_kernel
        self.mid = nn.ModuleList(TemporalResBlock(widths[-1], g, eps, k) for _ in range(2))
        self.up = nn.ModuleList(
            nn.ModuleList(TemporalResBlock(widths[i], g, eps, k) for _ in range(cfg.num_res_blocks + 1))
            for i in reversed(range(len(widths)))
        )
        self.out = TemporalOutConv(cfg.out_channels, k)


class TemporalDecoder(Decoder):
    """The per-frame decoder plus temporal layers: latents of whole clips -> frames.

    ``forward(z, num_frames)`` takes latents folded as ``(b*t, z, h, w)`` (the same input
    the per-frame decoder takes) and needs ``num_frames`` to know where clips start.
    """

    def __init__(self, cfg: VAEConfig):
        super().__init__(cfg)
        self.temporal = TemporalLayers(cfg)

    def forward(self, z: torch.Tensor, num_frames: int = 1) -> torch.Tensor:  # z: (b*t, z, h, w)
        t = num_frames

        def across_time(block: nn.Module, h: torch.Tensor) -> torch.Tensor:
            # (b*t, c, h, w) -> (b, c, t, h, w) -> temporal block -> back to (b*t, c, h, w)
            return frames_to_batch(block(batch_to_frames(h, t)))

        # The same walk as Decoder.forward, with a temporal block after every ResnetBlock.
        h = self.conv_in(z)  # (b*t, ch*mult[-1], h, w)
        h = across_time(self.temporal.mid[0], self.mid.res1(h))
        if self.mid.attn is not None:
            h = self.mid.attn(h)
        h = across_time(self.temporal.mid[1], self.mid.res2(h))
        for level, temporal_level in zip(self.up, self.temporal.up):
            for block, temporal_block in zip(level.res, temporal_level):
                h = across_time(temporal_block, block(h))
            if level.upsample is not None:
                h = level.upsample(h)  # (b*t, c, 2h, 2w)
        h = self.conv_out(F.silu(self.norm_out(h)))  # (b*t, 3, H, W)
        return across_time(self.temporal.out, h)

    def temporal_parameters(self) -> list[nn.Parameter]:
        """Only the added temporal layers (to fine-tune them alone)."""
        return list(self.temporal.parameters())


__all__ = ["TemporalDecoder", "TemporalLayers", "TemporalOutConv", "TemporalResBlock"]
