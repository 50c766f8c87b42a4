"""Temporal consistency: does the clip change smoothly, or flicker and jump?

Analytic measures on videos ``(b, 3, t, h, w)`` in [-1, 1], each ``(b,)``:

* **flicker**: mean absolute *second* temporal difference of the pixels,
  :math:`|x_{t+1} - 2x_t + x_{t-1}|`, in [0, 1] units. Smooth motion and still
  backgrounds give little; frames out of order or per-frame noise give a lot.
* **background_flicker**: mean absolute first difference :math:`|x_{t+1} - x_t|` over
  pixels away from the object in both frames: the shimmer a per-frame decoder leaves on
  a background that should be still (VideoGen's motivation for its video decoder).
* **jerk**: mean absolute second difference of the tracked object's centroid, in
  pixels: a trajectory that jumps back and forth scores high.
* **identity agreement** (needs the attribute classifier, see
  :class:`vdlearn.eval.Judge`): the fraction of frames whose object and colour agree
  with the clip's overall verdict.

Taught in notebook 01_toy_video_world and used in 02_latent_space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vdlearn.eval.tracker import track


def _to01(video: torch.Tensor) -> torch.Tensor:
    return ((video.float() + 1) / 2).clamp(0, 1)


def flicker(video: torch.Tensor) -> torch.Tensor:
    """``(b,)`` mean |x[t+1] - 2 x[t] + x[t-1]| in [0, 1] units."""
    x = _to01(video)
    if x.shape[2] < 3:
        raise ValueError(f"flicker needs at least 3 frames, got {x.shape[2]}.")
    second = x[:, :, 2:] - 2 * x[:, :, 1:-1] + x[:, :, :-2]
    return second.abs().mean(dim=(1, 2, 3, 4))


def background_flicker(video: torch.Tensor, fg: torch.Tensor | None = None, margin: int = 2) -> torch.Tensor:
    """``(b,)`` mean |x[t+1] - x[t]| over pixels at least ``margin`` px away from the object."""
    x = _to01(video)
    if fg is None:
        fg = track(video, fps=8).foreground  # (b, t, h, w); fps does not matter for masks
    near = F.max_pool2d(fg.flatten(0, 1)[:, None], 2 * margin + 1, stride=1, padding=margin)[:, 0]
    near = near.unflatten(0, fg.shape[:2]) > 0.05  # (b, t, h, w)
    still = ~(near[:, 1:] | near[:, :-1])  # (b, t-1, h, w) background in both frames
    diff = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(1)  # (b, t-1, h, w)
    return (diff * still).sum(dim=(1, 2, 3)) / still.sum(dim=(1, 2, 3)).clamp_min(1)


def jerk(video: torch.Tensor, fps: torch.Tensor | int = 8) -> torch.Tensor:
    """``(b,)`` mean |c[t+1] - 2 c[t] + c[t-1]| of the object's centroid, in pixels (NaN if lost)."""
    c = track(video, fps).centroid  # (b, t, 2)
    second = (c[:, 2:] - 2 * c[:, 1:-1] + c[:, :-2]).norm(dim=-1)
    return second.nanmean(dim=1)


def temporal(video: torch.Tensor, fps: torch.Tensor | int = 8) -> dict[str, torch.Tensor]:
    """The analytic temporal measures in one dict, each ``(b,)``."""
    tr = track(video, fps)
    c = tr.centroid
    second = (c[:, 2:] - 2 * c[:, 1:-1] + c[:, :-2]).norm(dim=-1)
    return {
        "flicker": flicker(video),
        "background_flicker": background_flicker(video, tr.foreground),
        "jerk": second.nanmean(dim=1),
    }
