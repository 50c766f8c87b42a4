"""Picture quality without a learned model: sharpness, noise, watermark.

Three analytic measures, each per clip, on videos ``(b, 3, t, h, w)`` in [-1, 1]:

* **sharpness**: the 99th percentile of the luminance gradient magnitude (an edge's
  steepness). Blur and dull contrast lower it.
* **noise**: Immerkaer's fast noise estimate (Computer Vision and Image Understanding
  64(2), 1996): the mean absolute response to a Laplacian-difference mask that
  cancels linear ramps, scaled to a Gaussian standard deviation.
* **watermark**: the median over frames of how much brighter the pixels of the world's
  "VD" stamp are than the pixels right around it.

These are the toy world's stand-ins for the visual-quality axis of EvalCrafter, the
benchmark VideoCrafter2 (arXiv 2401.09047, Table 1) reports. Taught in notebook
01_toy_video_world.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vdlearn.data.degrade import watermark_mask

_LUMA = torch.tensor([0.299, 0.587, 0.114])


def luminance(video: torch.Tensor) -> torch.Tensor:
    """``(b, t, h, w)`` luminance in [0, 1] of videos ``(b, 3, t, h, w)`` in [-1, 1]."""
    x = ((video.float() + 1) / 2).clamp(0, 1)
    return torch.einsum("bcthw,c->bthw", x, _LUMA.to(x.device))


def sharpness(video: torch.Tensor) -> torch.Tensor:
    """``(b,)``: 99th percentile of the colour gradient magnitude (RGB in [0, 1] per pixel)."""
    x = ((video.float() + 1) / 2).clamp(0, 1)  # (b, 3, t, h, w)
    gx = x[..., :, 1:] - x[..., :, :-1]
    gy = x[..., 1:, :] - x[..., :-1, :]
    mag = (gx[..., :-1, :] ** 2 + gy[..., :, :-1] ** 2).sum(1).sqrt()  # (b, t, h-1, w-1)
    return mag.flatten(1).quantile(0.99, dim=1)


def noise_sigma(video: torch.Tensor) -> torch.Tensor:
    """``(b,)``: Immerkaer's estimate of the standard deviation of additive noise."""
    y = luminance(video)
    b, t, h, w = y.shape
    mask = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]], device=y.device)
    resp = F.conv2d(y.reshape(b * t, 1, h, w), mask[None, None])  # (b*t, 1, h-2, w-2)
    # sigma = sqrt(pi/2) / (6 (W-2)(H-2)) * sum |I * N|
    sigma = math.sqrt(math.pi / 2) / 6 * resp.abs().mean(dim=(1, 2, 3))
    return sigma.view(b, t).mean(1)


def watermark_score(video: torch.Tensor) -> torch.Tensor:
    """``(b,)``: how much brighter the "VD" stamp's pixels are than their surroundings.

    For every stroke pixel: its luminance minus the mean luminance of the non-stroke
    pixels in its 5x5 neighbourhood; then the median over stroke pixels and frames,
    so an object passing over part of the stamp does not sway the verdict.
    """
    y = luminance(video)  # (b, t, h, w)
    b, t, h, w = y.shape
    m = watermark_mask(w).to(y.device)
    stroke = m > 0.5
    off = (m < 0.05).float()[None, None]  # (1, 1, h, w) pixels clearly outside the stamp
    frames = y.reshape(b * t, 1, h, w)
    local_sum = F.avg_pool2d(frames * off, 5, stride=1, padding=2, divisor_override=1)
    local_n = F.avg_pool2d(off, 5, stride=1, padding=2, divisor_override=1).clamp_min(1)
    diff = (frames - local_sum / local_n)[:, 0][:, stroke]  # (b*t, n_stroke)
    return diff.reshape(b, -1).median(dim=1).values


def quality(video: torch.Tensor, watermark_threshold: float = 0.025) -> dict[str, torch.Tensor]:
    """All picture-quality measures, each ``(b,)``; ``watermark`` is 0/1 (detected)."""
    wm = watermark_score(video)
    return {
        "sharpness": sharpness(video),
        "noise": noise_sigma(video),
        "watermark_score": wm,
        "watermark": (wm > watermark_threshold).float(),
    }
