"""Showing and saving videos: in a notebook, to mp4 or GIF, and back.

vdlearn's videos are ``(b, c, t, h, w)`` or ``(c, t, h, w)`` tensors in [-1, 1]; for
display they become ``(t, h, w, 3)`` frames in [0, 1] (:func:`to_frames`).

* In a notebook, :func:`show_video` / :func:`show_videos` use mediapy (H.264 in an
  HTML5 player) when an ffmpeg is found (``imageio-ffmpeg`` ships one), and fall back
  to an animated GIF drawn by Pillow otherwise, which every Jupyter front end shows.
* :func:`save_video` writes ``.mp4`` (needs ffmpeg) or ``.gif`` (Pillow, always works);
  asked for ``.mp4`` without ffmpeg it writes a GIF and says so.
* :func:`read_video` reads ``.gif``, ``.mp4``, ``.npy`` and ``.pt`` back into a tensor.

Toy frames are tiny (32 x 32), so everything is upscaled with nearest-neighbour
(``scale``) before display. Used by every notebook.
"""

from __future__ import annotations

import functools
import io
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch


@functools.lru_cache(maxsize=1)
def ffmpeg_path() -> str | None:
    """An ffmpeg executable (the system's, else imageio-ffmpeg's), or ``None``."""
    path = shutil.which("ffmpeg")
    if path:
        return path
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError, OSError):  # not installed, or no binary for this platform
        return None


def to_frames(video, scale: int = 1) -> np.ndarray:
    """Any video -> ``(t, h, w, 3)`` float32 frames in [0, 1], upscaled by ``scale``.

    Accepts tensors or arrays shaped ``(c, t, h, w)`` (vdlearn's layout, values in
    [-1, 1]), ``(t, h, w, c)`` (display layout, values in [0, 1]) or images
    ``(c, h, w)``. A batch dimension of size 1 is dropped.
    """
    x = video.detach().float().cpu().numpy() if isinstance(video, torch.Tensor) else np.asarray(video, dtype=np.float32)
    if x.ndim == 5 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 3 and x.shape[0] in (1, 3):  # an image (c, h, w)
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"Expected a video (c, t, h, w) or (t, h, w, c), got shape {x.shape}.")
    if x.shape[0] in (1, 3) and x.shape[-1] not in (1, 3) or x.shape[0] in (1, 3) and x.shape[-1] in (1, 3) and x.min() < 0:  # (c, t, h, w) in [-1, 1]
        x = (np.moveaxis(x, 0, -1) + 1) / 2
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    x = np.clip(x, 0, 1)
    if scale > 1:
        x = x.repeat(scale, axis=1).repeat(scale, axis=2)
    return x


def gif_bytes(video, fps: float = 8, scale: int = 4) -> bytes:
    """An animated GIF (looping) of a video, drawn with Pillow."""
    from PIL import Image

    frames = (to_frames(video, scale) * 255).round().astype(np.uint8)
    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(int(1000 / fps), 20), loop=0, disposal=2)
    return buf.getvalue()


def _use_mediapy() -> bool:
    if ffmpeg_path() is None:
        return False
    try:
        import mediapy

        mediapy.set_ffmpeg(ffmpeg_path())
        return True
    except ImportError:
        return False


def show_videos(videos, fps: float = 8, scale: int = 4, titles: Sequence[str] | None = None,
                columns: int = 6, codec: str = "auto") -> None:
    """Show several videos side by side in a notebook.

    ``videos``: a dict ``{title: video}``, a list of videos, or a batch tensor
    ``(b, c, t, h, w)``. ``codec``: ``"auto"`` (mediapy if ffmpeg is found, else GIF),
    ``"gif"`` or ``"mp4"``.
    """
    from IPython.display import HTML, display

    if isinstance(videos, Mapping):
        titles, items = list(videos.keys()), list(videos.values())
    elif isinstance(videos, torch.Tensor) and videos.ndim == 5:
        items = list(videos)
    else:
        items = list(videos)
    titles = list(titles) if titles is not None else [None] * len(items)
    if len(titles) != len(items):
        raise ValueError(f"Got {len(items)} videos but {len(titles)} titles.")
    if codec not in ("auto", "gif", "mp4"):
        raise ValueError(f"codec must be 'auto', 'gif' or 'mp4', got {codec!r}.")
    if codec == "mp4" or (codec == "auto" and _use_mediapy()):
        import mediapy

        frames = [to_frames(v, scale) for v in items]
        for i in range(0, len(frames), columns):
            mediapy.show_videos(frames[i : i + columns], titles=titles[i : i + columns], fps=fps, codec="h264")
        return
    import base64

    cells = []
    for v, t in zip(items, titles):
        data = base64.b64encode(gif_bytes(v, fps, scale)).decode()
        caption = f"<div style='font-size:11px;max-width:{to_frames(v).shape[2] * scale}px'>{t}</div>" if t else ""
        cells.append(f"<div style='display:inline-block;margin:4px;vertical-align:top;text-align:center'>"
                     f"<img src='data:image/gif;base64,{data}'/>{caption}</div>")
    display(HTML("".join(cells)))


def show_video(video, fps: float = 8, scale: int = 4, title: str | None = None, codec: str = "auto") -> None:
    """Show one video in a notebook (see :func:`show_videos`)."""
    show_videos([video], fps=fps, scale=scale, titles=[title] if title else None, codec=codec)


def save_video(path: str | Path, video, fps: float = 8, scale: int = 4) -> Path:
    """Write ``.mp4`` (needs ffmpeg) or ``.gif``; returns the path actually written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"save_video writes .mp4 or .gif files, got {path.name!r}.")
    if path.suffix.lower() == ".mp4":
        if _use_mediapy():
            import mediapy

            mediapy.write_video(path, to_frames(video, scale), fps=fps)
            return path
        warnings.warn(f"No ffmpeg found: writing {path.with_suffix('.gif').name} instead of {path.name}.")
        path = path.with_suffix(".gif")
    path.write_bytes(gif_bytes(video, fps, scale))
    return path


def read_video(path: str | Path, size: int | None = None) -> tuple[torch.Tensor, float | None]:
    """Read a video file into ``(3, t, h, w)`` in [-1, 1]; returns ``(video, fps or None)``.

    ``.gif`` (Pillow), ``.mp4`` (imageio-ffmpeg's reader), ``.npy`` (array ``(t, h, w, 3)``
    in [0, 1] or ``(3, t, h, w)`` in [-1, 1]) and ``.pt`` (a tensor in vdlearn's layout).
    ``size`` resizes frames (area averaging), e.g. to undo a display ``scale``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No video file at {path}.")
    from vdlearn.io import InputError

    if path.stat().st_size == 0:
        raise InputError(f"The video file {path} is empty (0 bytes).")
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4", ".npy", ".pt"):
        raise InputError(f"Cannot read {path.name!r}: use .gif, .mp4, .npy or .pt.")
    try:
        video, fps = _read_video_file(path, suffix)
    except Exception as err:  # a truncated or mislabelled file: name it
        raise InputError(f"Cannot read the video file {path} ({type(err).__name__}: {str(err)[:200]}); it may be "
                         f"truncated or not a {suffix} file.") from err
    if video.ndim != 4 or video.shape[0] != 3:
        raise InputError(f"{path.name} does not hold an RGB video; got shape {tuple(video.shape)}.")
    h, w = video.shape[-2:]
    if size is not None and (h != w or h % size):  # only a display scale (an integer factor) is undone
        raise InputError(f"{path} has frames of {w}x{h} px; resizing them to {size}x{size} would distort them. "
                         f"Give square frames of {size} px or a multiple of it (a file written with --scale), "
                         f"or another size (--size of `vdlearn judge`).")
    if size is not None and h != size:
        video = torch.nn.functional.interpolate(video.transpose(0, 1), size=(size, size), mode="area").transpose(0, 1)
    return video.contiguous(), fps


def _read_video_file(path: Path, suffix: str) -> tuple[torch.Tensor, float | None]:
    fps = None
    if suffix == ".gif":
        from PIL import Image, ImageSequence

        im = Image.open(path)
        frames = np.stack([np.asarray(f.convert("RGB"), dtype=np.float32) / 255 for f in ImageSequence.Iterator(im)])
        if im.info.get("duration"):
            fps = 1000.0 / im.info["duration"]
        video = torch.from_numpy(frames).permute(3, 0, 1, 2) * 2 - 1
    elif suffix == ".mp4":
        import imageio_ffmpeg

        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        w, h = meta["size"]
        frames = np.stack([np.frombuffer(f, dtype=np.uint8).reshape(h, w, 3) for f in reader]).astype(np.float32) / 255
        fps = meta.get("fps")
        video = torch.from_numpy(frames).permute(3, 0, 1, 2) * 2 - 1
    else:  # .npy or .pt
        arr = torch.load(path, weights_only=True, map_location="cpu") if suffix == ".pt" else torch.from_numpy(np.load(path))
        arr = arr.float()
        if arr.ndim == 4 and arr.shape[-1] == 3:  # (t, h, w, 3) in [0, 1]
            arr = arr.permute(3, 0, 1, 2) * 2 - 1
        video = arr
    return video, fps


def frame_strip(video, every: int = 1, ax=None, title: str | None = None):
    """Frames of one video side by side on a matplotlib axis (for static figures)."""
    import matplotlib.pyplot as plt

    frames = to_frames(video)[::every]
    strip = np.concatenate(list(frames), axis=1)
    if ax is None:
        _, ax = plt.subplots(figsize=(min(1.0 * len(frames), 16), 1.3))
    ax.imshow(strip, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9, loc="left")
    return ax
