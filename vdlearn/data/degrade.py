"""The low-quality video regime: what makes WebVid-style footage look cheap.

VideoCrafter2 (arXiv 2401.09047, sec. 1 and 3) trains on plentiful but low-quality
videos (WebVid-10M: blurry, compressed, watermarked) and on high-quality still images
(JDB). The toy world reproduces that situation with five degradations, applied to a
clean clip in this order:

1. **dull colours**: pull saturation and contrast toward grey;
2. **blur**: a Gaussian blur of width ``sigma`` pixels;
3. **watermark**: a fixed semi-transparent "VD" stamp in the middle of every frame;
4. **compression**: JPEG-style quantisation of the 8x8 block DCT of each frame;
5. **noise**: additive Gaussian sensor noise.

All functions take ``(b, c, t, h, w)`` videos in [0, 1] and per-clip strengths of
shape ``(b,)``, so a batch of clips is degraded in a handful of tensor operations.
Taught in notebook 01_toy_video_world.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F


def dull_colours(video: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Blend each pixel toward its grey value and squeeze the contrast; ``amount`` in [0, 1]."""
    a = amount.view(-1, 1, 1, 1, 1)
    grey = video.mean(dim=1, keepdim=True)  # (b, 1, t, h, w)
    x = grey + (1 - 0.6 * a) * (video - grey)  # less saturated
    return 0.5 + (1 - 0.45 * a) * (x - 0.5)  # less contrast


def gaussian_blur(video: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of each frame, one ``sigma`` (pixels) per clip."""
    radius = math.ceil(3 * float(sigma.max())) if sigma.numel() else 0
    if radius == 0:
        return video
    b, c, t, h, w = video.shape
    offsets = torch.arange(-radius, radius + 1, dtype=video.dtype, device=video.device)  # (k,)
    kernel = torch.exp(-0.5 * (offsets[None] / sigma[:, None].clamp_min(1e-3)) ** 2)  # (b, k)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c * t, dim=0)  # (b*c*t, k)
    x = video.reshape(1, b * c * t, h, w)  # every frame channel is its own group
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=b * c * t)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel[:, None, :, None], groups=b * c * t)
    return x.reshape(b, c, t, h, w)


@functools.lru_cache(maxsize=8)
def watermark_mask(size: int) -> torch.Tensor:
    """The watermark stamp for ``size`` x ``size`` frames: an ``(h, w)`` alpha mask of the letters VD.

    Drawn with Pillow's bundled font, so it is the same on every machine.
    """
    from PIL import Image, ImageDraw, ImageFont

    scale = 4
    canvas = Image.new("L", (size * scale, size * scale), 0)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=int(size * scale * 0.42))
    box = draw.textbbox((0, 0), "VD", font=font)
    w, h = box[2] - box[0], box[3] - box[1]
    draw.text(((size * scale - w) / 2 - box[0], (size * scale - h) / 2 - box[1]), "VD", fill=255, font=font)
    hi = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)[None, None]
    return F.avg_pool2d(hi, scale)[0, 0].clamp(0, 1).contiguous()  # (h, w)


def add_watermark(video: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    """Blend a white "VD" stamp over every frame; ``strength`` is the stamp's opacity."""
    mask = watermark_mask(video.shape[-1]).to(video)  # (h, w)
    alpha = strength.view(-1, 1, 1, 1, 1) * mask  # (b, 1, 1, h, w)
    return video * (1 - alpha) + alpha


@functools.lru_cache(maxsize=4)
def _dct_matrix(n: int = 8) -> torch.Tensor:
    """Orthonormal DCT-II matrix: ``D @ x`` is the DCT of a length-n signal."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d.float()


# The JPEG standard's luminance quantisation table (ITU-T T.81, annex K), in 0..255 units.
_JPEG_Q = torch.tensor(
    [
        [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=torch.float32,
)


def jpeg_compress(video: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """JPEG-style compression: quantise the 8x8 block DCT of each channel.

    ``quality`` follows libjpeg's scale (1 worst .. 100 best). Frames whose size is
    not a multiple of 8 are padded by replication and cropped back.
    """
    b, c, t, h, w = video.shape
    ph, pw = (-h) % 8, (-w) % 8
    x = video.flatten(1, 2)  # (b, c*t, h, w)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    H, W = x.shape[-2:]
    blocks = x.reshape(b, c * t, H // 8, 8, W // 8, 8).transpose(3, 4)  # (b, ct, H/8, W/8, 8, 8)
    d = _dct_matrix().to(video)
    coef = d @ (blocks * 255 - 128) @ d.T
    q = quality.clamp(1, 100).to(video)
    scale = torch.where(q < 50, 50 / q, 2 - q / 50).view(-1, 1, 1, 1, 1, 1)  # libjpeg's rule
    table = (_JPEG_Q.to(video) * scale).clamp_min(1)  # (b, 1, 1, 1, 8, 8)
    coef = torch.round(coef / table) * table
    blocks = (d.T @ coef @ d + 128) / 255
    x = blocks.transpose(3, 4).reshape(b, c * t, H, W)[..., :h, :w]
    return x.reshape(b, c, t, h, w)


def add_noise(video: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Add ``sigma * noise`` (``noise`` is standard normal, one field per clip)."""
    return video + sigma.view(-1, 1, 1, 1, 1) * noise
