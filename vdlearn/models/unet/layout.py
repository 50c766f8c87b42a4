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

The layout is tied to one latent size (frames, height, width), like a learned absolute
position embedding; a U-Net with it runs at that size only.

It lives outside the paper U-Net: :class:`CaptionLayoutUNet` is a :class:`VideoUNet` whose
``stem`` (``conv_in``) adds the layout; ``VideoUNet.forward`` itself knows nothing of it.
The text-to-video presets ``toy_layout`` and ``tiny_layout`` use it (notebook 05). In a joint
image-video batch (``num_images > 0``) only the video frames get the layout.

    ``CaptionLayout.forward(context (b, n, d)) -> (b*t, channels, h, w)``, frames folded into the batch.
"""

from __future__ import annotations

import torch
from torch import nn

from vdlearn.models.unet.unet import UNetConfig, VideoUNet


class CaptionLayout(nn.Module):
    """Pooled caption -> MLP -> ``rank`` channels per latent position and frame -> 1x1 conv."""

    def __init__(self, context_dim: int, channels: int, frames: int, height: int, width: int,
                 rank: int = 4, hidden: int = 256):
        super().__init__()
        if min(frames, height, width, rank, hidden) < 1:
            raise ValueError(f"frames, height, width, rank and hidden must be positive, got "
                             f"{(frames, height, width, rank, hidden)}.")
        self.frames, self.height, self.width, self.rank = frames, height, width, rank
        self.mlp = nn.Sequential(nn.Linear(context_dim, hidden), nn.SiLU(),
                                 nn.Linear(hidden, frames * rank * height * width))
        self.proj = nn.Conv2d(rank, channels, 1)
        nn.init.zeros_(self.proj.weight)  # silent at the start: a trained U-Net is unchanged
        nn.init.zeros_(self.proj.bias)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        b = context.shape[0]
        pooled = context.mean(dim=1)  # (b, d): every token, padding included, as the text encoder gives them
        codes = self.mlp(pooled).reshape(b * self.frames, self.rank, self.height, self.width)  # (b*t, r, h, w)
        return self.proj(codes)  # (b*t, channels, h, w)


class CaptionLayoutUNet(VideoUNet):
    """vdlearn's own addition: a :class:`VideoUNet` plus a :class:`CaptionLayout` added after ``conv_in``.

    ``layout`` is the latent's ``(frames, height, width)``; the state dict is the U-Net's plus
    ``caption_layout.*``.
    """

    def __init__(self, config: UNetConfig, layout: tuple[int, int, int], rank: int = 4):
        super().__init__(config)
        layout = tuple(int(v) for v in layout)
        if len(layout) != 3 or min(layout) < 1:
            raise ValueError(f"caption_layout must be (frames, height, width) of the latent, got {layout}.")
        if config.context_dim is None:
            raise ValueError("caption_layout needs a caption: set context_dim.")
        self.caption_layout = CaptionLayout(config.context_dim, config.model_channels, *layout, rank=rank)

    def stem(self, h, x, context, num_images):
        h = super().stem(h, x, context, num_images)  # (b*t, model_channels, h, w)
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
            return h + self.caption_layout(context).to(h.dtype)  # (b*t, model_channels, h, w)
        # joint image-video batches (LaVie sec. 3.4): the context may come one per frame, (b*t, n, d), with
        # the video's caption on its first frame; the layout describes the video frames, the images get none
        if context.shape[0] == b * t:
            context = context.reshape(b, t, *context.shape[1:])[:, 0]  # (b, n, d)
        layout = self.caption_layout(context).to(h.dtype)  # (b*video_frames, c, h, w)
        h = h.reshape(b, t, *h.shape[1:])  # (b, t, c, h, w)
        layout = layout.reshape(b, video_frames, *layout.shape[1:])
        h = torch.cat([h[:, :video_frames] + layout, h[:, video_frames:]], dim=1)
        return h.reshape(b * t, *h.shape[2:])  # (b*t, model_channels, h, w)

__all__ = ["CaptionLayout", "CaptionLayoutUNet"]
