"""The analytic motion tracker: where is the object in each frame, and where is it going?

No learning here, so nothing to fool. In each frame the background is estimated row
by row (the median of each row: the object covers less than half of any row), and the
foreground is what differs from it by more than half the clip's strongest difference.
The low-quality regime's watermark is fainter than that, so it never enters the
foreground. Nothing is subtracted over time: a slow object overlaps itself in every frame
(half a pixel per frame at 16 fps), and removing what every frame shares would remove its
core and leave edges that move faster than the object (data/t2v/README.md, "The tracker
and slow clips at 16 fps"). A frozen object keeps its mass and centroid, so it reads as
not moving. The object's centroid over time gives:

* **direction**: the dominant axis and sign of the median step over the first
  ``t/4 + 2`` steps (before the object can reach a wall); ``"none"`` when the object
  barely moves, so a static clip fails every direction;
* **speed**: the median step length, converted to pixels per second with the clip's
  fps and to the 32-pixel scale, then thresholded between "slowly" and "quickly".

Taught in notebook 01_toy_video_world; used by :class:`vdlearn.eval.Judge`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vdlearn.data.captions import DIRECTIONS, SPEEDS


@dataclass
class Track:
    """Tracker output for a batch of clips."""

    centroid: torch.Tensor  # (b, t, 2) x, y in pixels; NaN where no object was found
    mass: torch.Tensor  # (b, t) foreground area in pixels
    foreground: torch.Tensor  # (b, t, h, w) soft foreground weights in [0, 1]
    step_px_per_s: torch.Tensor  # (b,) median speed in px/s at the 32-pixel scale
    direction: list[str]  # left/right/up/down or "none"
    speed: list[str]  # slowly/quickly or "none"


def _to01(video: torch.Tensor) -> torch.Tensor:
    return ((video.float() + 1) / 2).clamp(0, 1)


def foreground(video: torch.Tensor, floor: float = 0.12) -> torch.Tensor:
    """Soft foreground ``(b, t, h, w)`` of clips ``(b, 3, t, h, w)`` in [-1, 1].

    A pixel's distance from its row's background colour is smoothed over 3x3 pixels
    (so sensor noise averages out) and compared with a threshold of half the clip's
    strongest distance (so dull, low-contrast clips are tracked too), never below
    ``floor``.
    """
    x = _to01(video)
    bg = x.median(dim=-1, keepdim=True).values  # (b, 3, t, h, 1): one colour per row
    dist = (x - bg).norm(dim=1)  # (b, t, h, w)
    dist = F.avg_pool2d(dist.flatten(0, 1)[:, None], 3, stride=1, padding=1, count_include_pad=False)
    dist = dist[:, 0].unflatten(0, video.shape[:1] + video.shape[2:3])  # (b, t, h, w)
    peak = dist.flatten(1).quantile(0.995, dim=1).view(-1, 1, 1, 1)
    threshold = (0.5 * peak).clamp_min(floor)
    return ((dist - threshold) / threshold).clamp(0, 1)  # (b, t, h, w)


def track(
    video: torch.Tensor, fps: torch.Tensor | float, slow_fast_px_per_s: float = 14.0,
    min_px_per_s: float = 3.0, min_mass: float = 3.0,
) -> Track:
    """Track the object in clips ``(b, 3, t, h, w)`` in [-1, 1] shot at ``fps``.

    ``slow_fast_px_per_s`` is the threshold between "slowly" and "quickly" and
    ``min_px_per_s`` the speed below which the object counts as not moving, both at
    the 32-pixel scale (the world's speeds are 8 and 20 px/s).
    """
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"track expects videos (b, 3, t, h, w), got shape {tuple(video.shape)}.")
    b, _, t, h, w = video.shape
    if t < 3:
        raise ValueError(f"Tracking needs at least 3 frames, got {t}.")
    fps = torch.as_tensor(fps, dtype=torch.float32).flatten().expand(b) if not torch.is_tensor(fps) or fps.numel() == 1 \
        else fps.float().flatten()
    fg = foreground(video)  # (b, t, h, w)
    mass = fg.sum(dim=(-1, -2))  # (b, t)
    ys = torch.arange(h, dtype=torch.float32, device=video.device) + 0.5
    xs = torch.arange(w, dtype=torch.float32, device=video.device) + 0.5
    cx = (fg.sum(-2) * xs).sum(-1) / mass.clamp_min(1e-6)
    cy = (fg.sum(-1) * ys).sum(-1) / mass.clamp_min(1e-6)
    centroid = torch.stack([cx, cy], dim=-1)  # (b, t, 2)
    valid = mass >= min_mass
    centroid = torch.where(valid[..., None], centroid, torch.full_like(centroid, float("nan")))
    scale = 32.0 / w
    steps = (centroid[:, 1:] - centroid[:, :-1]).norm(dim=-1)  # (b, t-1)
    step_px_per_s = steps.nanmedian(dim=1).values * fps.to(steps) * scale
    early = centroid[:, : t // 4 + 3]  # the first t/4 + 2 steps: the world keeps them wall-free
    disp = (early[:, 1:] - early[:, :-1]).nanmedian(dim=1).values  # (b, 2) typical early step
    directions, speeds = [], []
    for i in range(b):
        d = disp[i]
        v = float(step_px_per_s[i])
        if not torch.isfinite(d).all() or math.isnan(v) or v < min_px_per_s:
            directions.append("none")
            speeds.append("none")
            continue
        if d[0].abs() >= d[1].abs():
            directions.append("right" if d[0] > 0 else "left")
        else:
            directions.append("down" if d[1] > 0 else "up")
        speeds.append(SPEEDS[1] if v >= slow_fast_px_per_s else SPEEDS[0])
    assert set(directions) <= set(DIRECTIONS) | {"none"}
    return Track(centroid, mass, fg, step_px_per_s, directions, speeds)
