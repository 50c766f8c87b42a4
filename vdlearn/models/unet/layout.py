r"""vdlearn's own addition, in no paper: a caption layout, a direct path from the caption to *where and when* things are.

At the noisiest steps the sampler starts from, the best prediction of the clean latent
is the caption's mean clip, $\mathbb E[z_0 \mid y]$ (notebook 05, "What does the model
expect before it has seen anything?"). For colour that mean is nearly the same in every
frame and at every place, and the U-Net's cross-attention learns it. For the direction of
motion it is not: a clip that moves left starts right of centre and drifts left, so the
mean depends on the frame *and* the position *and* the caption. Measured on the shipped
toy model with :func:`vdlearn.eval.word_probe.first_guess`, the U-Net's first guesses for
"left" and "right" are 0.003 apart where the data's mean clips are 0.39 apart; it never
learned that mean, and its clips move in a random direction.

This module gives the U-Net the missing path. The caption's tokens are averaged into one
vector; a small MLP turns it into a low-rank feature video, ``rank`` channels at every
latent position and frame, and a 1x1 convolution lifts those to the U-Net's first width.
The result is added to the features right after ``conv_in``, before any temporal or
spatial layer, so every layer can build on "for this caption, the object is likely here in
this frame". The projection starts at zero: added to a trained U-Net, the module changes
nothing until it is trained (``vdlearn train t2v --init``).

Where clips come at several frame rates (``toy32_8f_fps``), where the object is in frame
``k`` depends on the fps as much as on the caption: a slow object moves 2 px per frame at
4 fps and 0.5 px at 16 fps. With ``fps_dim > 0`` the MLP also reads the sinusoid code of the
fps (the code the U-Net's own fps embedding starts from), so the layout can be the mean clip
of *this caption at this frame rate* (preset ``toy_layout_fpscond``, notebook 05). Without
it the layout is the average over frame rates.

The layout is tied to one latent size (frames, height, width), like a learned absolute
position embedding; a U-Net with it runs at that size only.

It lives outside the paper U-Net: :class:`CaptionLayoutUNet` is a :class:`VideoUNet` whose
``stem`` (``conv_in``) adds the layout; ``VideoUNet.forward`` itself knows nothing of it.
The text-to-video presets ``toy_layout`` and ``tiny_layout`` use it (notebook 05). In a joint
image-video batch (``num_images > 0``) only the video frames get the layout.

    ``CaptionLayout.forward(context (b, n, d)[, fps (b,)]) -> (b*t, channels, h, w)``, frames folded into the batch.
"""

from __future__ import annotations

import torch
from torch import nn

from vdlearn.models.unet.embeddings import sinusoidal_embedding
from vdlearn.models.unet.unet import UNetConfig, VideoUNet


class CaptionLayout(nn.Module):
    """Pooled caption [+ fps code] -> MLP -> ``rank`` channels per latent position and frame -> 1x1 conv."""

    def __init__(self, context_dim: int, channels: int, frames: int, height: int, width: int,
                 rank: int = 4, hidden: int = 256, fps_dim: int = 0):
        super().__init__()
        if min(frames, height, width, rank, hidden) < 1:
            raise ValueError(f"frames, height, width, rank and hidden must be positive, got "
                             f"{(frames, height, width, rank, hidden)}.")
        if fps_dim < 0:
            raise ValueError(f"fps_dim must be 0 (the layout ignores the fps) or positive, got {fps_dim}.")
        self.frames, self.height, self.width, self.rank, self.fps_dim = frames, height, width, rank, fps_dim
        self.mlp = nn.Sequential(nn.Linear(context_dim + fps_dim, hidden), nn.SiLU(),
                                 nn.Linear(hidden, frames * rank * height * width))
        self.proj = nn.Conv2d(rank, channels, 1)
        nn.init.zeros_(self.proj.weight)  # silent at the start: a trained U-Net is unchanged
        nn.init.zeros_(self.proj.bias)

    def forward(self, context: torch.Tensor, fps: torch.Tensor | None = None) -> torch.Tensor:
        b = context.shape[0]
        pooled = context.mean(dim=1)  # (b, d): every token, padding included, as the text encoder gives them
        if self.fps_dim:
            if fps is None:
                raise ValueError("This caption layout reads the fps (fps_dim > 0): pass fps.")
            code = sinusoidal_embedding(fps.reshape(-1), self.fps_dim).to(pooled.dtype)  # (b, fps_dim)
            pooled = torch.cat([pooled, code.expand(b, -1)], dim=1)  # (b, d + fps_dim)
        codes = self.mlp(pooled).reshape(b * self.frames, self.rank, self.height, self.width)  # (b*t, r, h, w)
        return self.proj(codes)  # (b*t, channels, h, w)


class CaptionLayoutUNet(VideoUNet):
    """vdlearn's own addition: a :class:`VideoUNet` plus a :class:`CaptionLayout` added after ``conv_in``.

    ``layout`` is the latent's ``(frames, height, width)``; the state dict is the U-Net's plus
    ``caption_layout.*``. ``fps_dim > 0``: the layout also reads the fps (needs ``config.fps_cond``).
    """

    def __init__(self, config: UNetConfig, layout: tuple[int, int, int], rank: int = 4, fps_dim: int = 0):
        super().__init__(config)
        layout = tuple(int(v) for v in layout)
        if len(layout) != 3 or min(layout) < 1:
            raise ValueError(f"caption_layout must be (frames, height, width) of the latent, got {layout}.")
        if config.context_dim is None:
            raise ValueError("caption_layout needs a caption: set context_dim.")
        if fps_dim and not config.fps_cond:
            raise ValueError("A caption layout that reads the fps needs a U-Net with fps_cond=True.")
        self.caption_layout = CaptionLayout(config.context_dim, config.model_channels, *layout, rank=rank,
                                            fps_dim=fps_dim)

    def stem(self, h, x, context, fps, num_images):
        h = super().stem(h, x, context, fps, num_images)  # (b*t, model_channels, h, w)
        b, _, t, hh, ww = x.shape
        if num_images == t:
            raise ValueError("The caption layout describes videos; it cannot run in image mode (temporal=False). "
                             "Mix images into a video batch with num_images instead.")
        video_frames = t - num_images
        want = self.caption_layout.frames, self.caption_layout.height, self.caption_layout.width
        if (video_frames, hh, ww) != want:
            raise ValueError(f"This U-Net has a caption layout for latents of (frames, height, width) = {want}, "
                             f"got {(video_frames, hh, ww)} (video frames). Generate at that size, or use a model "
                             f"without a caption layout.")
        if num_images == 0:
            if context.shape[0] != b:
                raise ValueError("The caption layout needs one caption per video, context (b, n, d); "
                                 "got a context per frame.")
            return h + self.caption_layout(context, fps).to(h.dtype)  # (b*t, model_channels, h, w)
        # joint image-video batches (LaVie sec. 3.4): the context may come one per frame, (b*t, n, d), with
        # the video's caption on its first frame; the layout describes the video frames, the images get none
        if context.shape[0] == b * t:
            context = context.reshape(b, t, *context.shape[1:])[:, 0]  # (b, n, d)
        layout = self.caption_layout(context, fps).to(h.dtype)  # (b*video_frames, c, h, w)
        h = h.reshape(b, t, *h.shape[1:])  # (b, t, c, h, w)
        layout = layout.reshape(b, video_frames, *layout.shape[1:])
        h = torch.cat([h[:, :video_frames] + layout, h[:, video_frames:]], dim=1)
        return h.reshape(b * t, *h.shape[2:])  # (b*t, model_channels, h, w)

__all__ = ["CaptionLayout", "CaptionLayoutUNet"]
