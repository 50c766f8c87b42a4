r"""Caption layout: a direct path from the caption to *where and when* things are.

At the noisiest steps the sampler starts from, the best prediction of the clean latent
is the caption's mean clip, $\mathbb E[z_0 \mid y]$ (notebook 05, "What does the model
expect before it has seen anything?"). For colour that mean is nearly the same in every
frame and at every place, and the U-Net's cross-attention learns it. For the direction of
motion it is not: a clip that moves left starts right of centre and drifts left, so the
mean depends on the frame *and* the position *and* the caption. Measured on the shipped
toy model with :func:`vdlearn.eval.listening.first_guess`, the U-Net's first guesses for
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

    ``forward(context (b, n, d)) -> (b*t, channels, h, w)``, frames folded into the batch.
"""

from __future__ import annotations

import torch
from torch import nn


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


__all__ = ["CaptionLayout"]
