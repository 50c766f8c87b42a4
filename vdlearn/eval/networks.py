"""The two small networks the judges use, trained by vdlearn on the toy world.

* :class:`AttributeClassifier` reads one frame and names its object and colour.
  Applied to every frame of a clip, it gives the clip's object and colour (mean of
  the per-frame log-probabilities) and how consistently the frames agree.
* :class:`VideoFeatureNet` is a small 3D convolutional network trained to recognise
  a clip's object, colour, direction, speed *and* whether it is clean or low-quality.
  Its 128-d penultimate features stand in for I3D's in a Frechet video distance
  (FVD, Unterthiner et al. 2018): I3D weights cannot be downloaded here, and FVD values
  are never comparable across feature networks anyway.

Both take frames of any size and resize to 32 x 32. Training: :mod:`vdlearn.eval.train`.
Taught in notebook 01_toy_video_world.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vdlearn.data.captions import COLOURS, DIRECTIONS, OBJECTS, SPEEDS

JUDGE_SIZE = 32  # judges look at 32 x 32 frames


def _to_judge_size(x: torch.Tensor) -> torch.Tensor:
    """Resize ``(n, c, h, w)`` frames to 32 x 32 (area averaging when shrinking)."""
    if x.shape[-1] == JUDGE_SIZE and x.shape[-2] == JUDGE_SIZE:
        return x
    return F.interpolate(x, size=(JUDGE_SIZE, JUDGE_SIZE), mode="area")


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())


@dataclass(frozen=True)
class ClassifierConfig:
    """Widths of the attribute classifier."""

    width: int = 24  # channels of the first stage; doubled at each of the two poolings


class AttributeClassifier(nn.Module):
    """Per-frame object and colour classifier: ``(n, 3, h, w)`` in [-1, 1] -> logits."""

    def __init__(self, config: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        self.config = config
        w = config.width
        self.body = nn.Sequential(
            _block(3, w), _block(w, w), nn.MaxPool2d(2),  # 16 x 16
            _block(w, 2 * w), _block(2 * w, 2 * w), nn.MaxPool2d(2),  # 8 x 8
            _block(2 * w, 4 * w), _block(4 * w, 4 * w),
        )
        self.object_head = nn.Linear(8 * w, len(OBJECTS))
        self.colour_head = nn.Linear(8 * w, len(COLOURS))

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(_to_judge_size(frames))  # (n, 4w, 8, 8)
        h = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)  # (n, 8w)
        return {"object": self.object_head(h), "colour": self.colour_head(h)}


@dataclass(frozen=True)
class FeatureNetConfig:
    """Widths of the video feature network."""

    widths: tuple[int, int, int, int] = (8, 32, 64, 128)  # channels of the four 3D conv stages


class VideoFeatureNet(nn.Module):
    """3D conv net: ``(b, 3, t, h, w)`` in [-1, 1] -> 128-d features (and attribute logits)."""

    HEADS: ClassVar[dict[str, int]] = {"object": len(OBJECTS), "colour": len(COLOURS), "direction": len(DIRECTIONS),
             "speed": len(SPEEDS), "regime": 2}

    def __init__(self, config: FeatureNetConfig = FeatureNetConfig()):
        super().__init__()
        self.config = config
        c1, c2, c3, c4 = config.widths
        self.body = nn.Sequential(
            nn.Conv3d(3, c1, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)), nn.SiLU(),  # 16 x 16
            nn.Conv3d(c1, c2, 3, stride=(1, 2, 2), padding=1), nn.GroupNorm(8, c2), nn.SiLU(),  # 8 x 8
            nn.Conv3d(c2, c3, 3, stride=2, padding=1), nn.GroupNorm(8, c3), nn.SiLU(),  # t/2, 4 x 4
            nn.Conv3d(c3, c4, 3, stride=(2, 1, 1), padding=1), nn.GroupNorm(8, c4), nn.SiLU(),
        )
        self.heads = nn.ModuleDict({k: nn.Linear(c4, n) for k, n in self.HEADS.items()})

    def features(self, video: torch.Tensor) -> torch.Tensor:
        """``(b, 128)`` pooled features of clips ``(b, 3, t, h, w)``."""
        b, c, t, h, w = video.shape
        frames = _to_judge_size(video.transpose(1, 2).reshape(b * t, c, h, w))
        x = frames.reshape(b, t, c, JUDGE_SIZE, JUDGE_SIZE).transpose(1, 2)  # (b, 3, t, 32, 32)
        return self.body(x).mean(dim=(2, 3, 4))

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(video)
        return {k: head(f) for k, head in self.heads.items()}
