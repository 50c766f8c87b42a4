"""From decoded latents to what a user keeps: frames as arrays, tensors or PIL images, and video files.

A pipeline decodes a batch of videos ``(b, 3, t, H, W)`` in [-1, 1] (vdlearn's layout).
Users of diffusers expect ``output.frames``, a *batch of frame lists*, and
``export_to_video(output.frames[0], "out.mp4", fps=8)``; :func:`postprocess_video` and
:func:`export_to_video` give exactly that:

===============  ===============================================================
``output_type``  ``frames``
===============  ===============================================================
``"np"``         float32 array ``(b, t, H, W, 3)`` in [0, 1]
``"pt"``         float32 tensor ``(b, t, 3, H, W)`` in [0, 1]
``"pil"``        ``b`` lists of ``t`` RGB ``PIL.Image`` frames
``"latent"``     the latents ``(b, 4, t, H/8, W/8)`` themselves, not decoded
===============  ===============================================================

The pixel mapping is the official one (``scripts/evaluation/funcs.py``, ``save_videos``):
clamp to [-1, 1], then ``(x + 1) / 2``; 8-bit frames are ``(x * 255)`` cast to ``uint8``
(truncation, as the official script and diffusers' ``export_to_video`` do).

Files: ``.mp4`` through mediapy with the ffmpeg that imageio-ffmpeg ships (or the
system's), ``.gif`` through Pillow; an ``.mp4`` asked for without any ffmpeg becomes a
``.gif`` beside it, with a warning (see :func:`vdlearn.viz.ffmpeg_path`).

Taught in notebook 10_pretrained.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vdlearn.viz import save_video

OUTPUT_TYPES = ("np", "pt", "pil", "latent")


def postprocess_video(video: torch.Tensor, output_type: str = "np"):
    """Decoded videos ``(b, 3, t, H, W)`` in [-1, 1] -> ``frames`` of ``output_type`` (see the table above)."""
    if output_type not in OUTPUT_TYPES[:3]:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
    frames = ((video.detach().float().clamp(-1, 1) + 1) / 2).permute(0, 2, 1, 3, 4)  # (b, t, 3, H, W) in [0, 1]
    if output_type == "pt":
        return frames.cpu()
    array = frames.permute(0, 1, 3, 4, 2).cpu().numpy()  # (b, t, H, W, 3)
    if output_type == "np":
        return array
    from PIL import Image

    return [[Image.fromarray(frame) for frame in to_uint8(clip)] for clip in array]


def to_uint8(frames) -> np.ndarray:
    """Frames ``(t, H, W, 3)`` in [0, 1] (array, tensor or PIL images) -> ``uint8`` ``(t, H, W, 3)``."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if isinstance(frames, Sequence) and len(frames) and hasattr(frames[0], "convert"):
        return np.stack([np.asarray(f.convert("RGB")) for f in frames])  # PIL images
    array = np.stack([np.asarray(f) for f in frames]) if isinstance(frames, Sequence) else np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"Expected frames (t, H, W, 3) in [0, 1], got shape {array.shape}. "
                         f"Pass one video: output.frames[0].")
    if array.dtype == np.uint8:
        return array
    return (np.clip(array.astype(np.float32), 0, 1) * 255).astype(np.uint8)  # truncation, as the official save_videos


def export_to_video(video_frames, output_video_path: str | Path, fps: float = 8) -> Path:
    """Write one video (``output.frames[0]``: np ``(t, H, W, 3)``, a tensor, or a list of PIL images).

    ``.mp4`` or ``.gif``, through :func:`vdlearn.viz.save_video`. Returns the path written:
    without ffmpeg an ``.mp4`` request writes a ``.gif`` instead, with a warning.
    """
    path = Path(output_video_path)
    if path.suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"export_to_video writes .mp4 or .gif files, got {path.name!r}.")
    if isinstance(video_frames, torch.Tensor) and video_frames.ndim == 4 and video_frames.shape[1] == 3:
        video_frames = video_frames.permute(0, 2, 3, 1)  # "pt" frames (t, 3, H, W) -> (t, H, W, 3)
    frames = to_uint8(video_frames)  # (t, H, W, 3), truncated as the official script does
    return save_video(path, frames.astype(np.float32) / 255, fps=fps, scale=1)


__all__ = ["OUTPUT_TYPES", "export_to_video", "postprocess_video", "to_uint8"]
