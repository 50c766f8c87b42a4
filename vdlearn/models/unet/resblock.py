"""The convolutional half of the video U-Net: ResBlock, its temporal convolution, resampling.

**ResBlock** (the DDPM/ADM residual block that Stable Diffusion and VideoCrafter keep)::

    h = Conv3x3(SiLU(GN(x)))                 # in_layers
    h = h + Linear(SiLU(emb))                # the timestep (+ fps) embedding, per channel
    h = Conv3x3(Dropout(SiLU(GN(h))))        # out_layers (last conv zero-initialised)
    h = skip(x) + h                          # skip: identity or 1x1 conv when channels change

It works on frames: the video ``(b, c, t, h, w)`` is folded to ``(b*t, c, h, w)`` and
every frame is processed alone, so its GroupNorm statistics are **per frame** (eps 1e-5,
computed in float32, as VideoCrafter's ``GroupNorm32``).

**Pseudo-3D convolution.** A full 3x3x3 convolution is expensive and has no pretrained
image weights. Video U-Nets instead factorise it: a 2D 3x3 convolution on every frame
(reusing Stable Diffusion's weights) followed by a 1D convolution along time. VideoCrafter2
(arXiv 2401.09047; its base model is VideoCrafter1's U-Net, fps conditioning included,
plus ModelScope's temporal convolutions) appends a :class:`TemporalConvBlock` to every ResBlock, *after*
``skip(x) + h``::

    for i in 1..4:  y = Conv3d_{(3,1,1)}(Dropout(SiLU(GN(y))))     # convolve over frames only
    out = x + y                                                    # residual; conv 4 zero-init

Its GroupNorms see the 5-D tensor ``(b, c, t, h, w)``, so their statistics **span all
frames** (eps 1e-5). Zero-initialising the last convolution makes the block the identity
at the start, so a trained image model is unchanged when the block is inserted.

**Video GroupNorm (LaVie).** LaVie's ``ResnetBlock3D`` (arXiv 2309.15103; ``base/models/resnet.py``
of Vchitect/LaVie) keeps Stable Diffusion's per-frame convolutions but applies its two
GroupNorms (and the U-Net's output norm) to the 5-D tensor ``(b, c, t, h, w)``: each group's
mean and variance are taken over ``(c/g, t, h, w)``, all frames together
(:func:`video_group_norm`, ``video_norm=True``). So the ResBlocks are *not* independent per
frame: the statistics of one frame change the output of every other. The weights are the
same as a per-frame GroupNorm's; only the statistics differ.

**LaVie's VSR temporal convolutions.** LaVie's video super-resolution U-Net (Wang et al. 2023, arXiv
2309.15103; ``vsr/models/resnet.py`` and ``temporal_module.py`` of Vchitect/LaVie) adds
two residual blocks of convolutions along time to Stable Diffusion's x4 upscaler:

* :class:`TemporalResBlock` (official ``ResnetBlock3DCNN``), a ResBlock whose convolutions look
  along time only: ``x + Conv3d_{(3,1,1)}(Dropout(SiLU(GN(Conv3d_{(k,1,1)}(SiLU(GN(x))) [+ emb]))))``,
  GroupNorms over all frames (eps 1e-6). With ``k = 3`` and no embedding it opens every spatial
  transformer; with ``k = 5`` and the embedding it opens every
* :class:`TemporalResModule` (official ``TemporalModule3D``), run after every level of the U-Net
  (down, middle, up)::

      y = TemporalResBlock_{k=5}(x, emb)        # along time
      y = ResBlock(y, emb)                      # 3x3 per frame, video GroupNorm (eps 1e-6)
      out = x + Conv1x1(y)                      # 1x1 conv zero-initialised: starts as the identity

Downsampling is a stride-2 3x3 convolution, upsampling nearest-neighbour x2 then a 3x3
convolution, both per frame.

Taught in ``notebooks/04_temporal_unet.ipynb``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm that computes in float32 and returns the input dtype (stable in fp16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """``(b, c, t, h, w) -> (b*t, c, h, w)``: every frame becomes a batch element."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def unfold_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """``(b*t, c, h, w) -> (b, c, t, h, w)``: the inverse of :func:`fold_frames`."""
    bt, c, h, w = x.shape
    return x.reshape(bt // frames, frames, c, h, w).permute(0, 2, 1, 3, 4)


def frames_as_rows(x: torch.Tensor, frames: int) -> torch.Tensor:
    """``(b*t, c, h, w) -> (b, c, t, h*w)``: time as the image height, pixels as its width.

    A GroupNorm over this 4-D tensor has the same statistics as over the 5-D video, and a
    ``(3, 1)`` 2-D convolution on it is a ``(3, 1, 1)`` 3-D convolution. In the U-Net's
    channels-last layout (memory order ``b, t, h, w, c``) this is a view: no copy.
    """
    bt, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(bt // frames, frames, h * w, c).permute(0, 3, 1, 2)


def rows_as_frames(y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(b, c, t, h*w) -> (b*t, c, h, w)``: the inverse of :func:`frames_as_rows`."""
    b, c, t, _ = y.shape
    return y.permute(0, 2, 3, 1).reshape(b * t, height, width, c).permute(0, 3, 1, 2)


def apply_to_video_frames(layer: nn.Module, h: torch.Tensor, frames: int, num_images: int = 0) -> torch.Tensor:
    """Run a temporal ``layer(h, frames)`` on the video frames only.

    ``h`` is ``(b*t, c, h, w)``; the last ``num_images`` of every sample's ``t`` frames are
    independent images (LaVie's joint image-video training) and pass unchanged. With
    ``num_images == t`` (image mode) the layer is skipped.
    """
    if num_images == 0:
        return layer(h, frames)
    video_frames = frames - num_images
    if video_frames <= 0:  # image mode: nothing temporal to do
        return h
    per_sample = h.unflatten(0, (-1, frames))  # (b, t, c, h, w)
    video = per_sample[:, :video_frames].flatten(0, 1)  # (b*t_video, c, h, w)
    video = layer(video, video_frames).unflatten(0, (-1, video_frames))
    return torch.cat([video, per_sample[:, video_frames:]], dim=1).flatten(0, 1)


def video_group_norm(norm: nn.GroupNorm, x: torch.Tensor, frames: int, num_images: int = 0) -> torch.Tensor:
    """``norm`` with statistics over ``(c/g, t, h, w)`` of each video, on folded frames ``x (b*t, c, h, w)``.

    The last ``num_images`` of every sample's ``t`` frames are independent images: each is
    normalised alone (per frame), so in image mode (``num_images == t``) this is ``norm(x)``.
    """
    h, w = x.shape[-2:]
    video_frames = frames - num_images
    if video_frames <= 0:
        return norm(x)  # (b*t, c, h, w), per frame
    if num_images == 0:
        return rows_as_frames(norm(frames_as_rows(x, frames)), h, w)  # (b*t, c, h, w)
    per_sample = x.unflatten(0, (-1, frames))  # (b, t, c, h, w)
    video = per_sample[:, :video_frames].flatten(0, 1)  # (b*t_video, c, h, w)
    video = rows_as_frames(norm(frames_as_rows(video, video_frames)), h, w).unflatten(0, (-1, video_frames))
    images = norm(per_sample[:, video_frames:].flatten(0, 1)).unflatten(0, (-1, num_images))
    return torch.cat([video, images], dim=1).flatten(0, 1)  # (b*t, c, h, w)


class TemporalConvBlock(nn.Module):
    """Four GroupNorm -> SiLU -> (Dropout) -> Conv3d(3,1,1) stages along time, plus a residual.

    Input and output: ``(b*t, c, h, w)`` with ``frames=t`` (the U-Net's folded layout).
    """

    def __init__(self, channels: int, dropout: float = 0.1, norm_groups: int = 32, stages: int = 4):
        super().__init__()
        self.norms = nn.ModuleList([nn.GroupNorm(norm_groups, channels, eps=1e-5) for _ in range(stages)])
        self.convs = nn.ModuleList(
            [nn.Conv3d(channels, channels, kernel_size=(3, 1, 1), padding=(1, 0, 0)) for _ in range(stages)]
        )
        self.dropout = nn.Dropout(dropout)
        # identity at initialisation: the last convolution outputs zeros
        nn.init.zeros_(self.convs[-1].weight)
        nn.init.zeros_(self.convs[-1].bias)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        h, w = x.shape[-2:]
        video = frames_as_rows(x, frames)  # (b, c, t, h*w)
        y = video
        for i, (norm, conv) in enumerate(zip(self.norms, self.convs)):
            y = F.silu(norm(y))  # statistics over (c/g, t, h, w): all frames together
            if i > 0:  # VideoCrafter / ModelScope: no dropout before the first convolution
                y = self.dropout(y)
            # the Conv3d's (c, c, 3, 1, 1) kernel used as a (c, c, 3, 1) Conv2d on (b, c, t, h*w):
            # the same numbers, and CPUs have much faster 2-D convolution kernels
            y = F.conv2d(y, conv.weight.squeeze(-1), conv.bias, padding=(1, 0))  # (b, c, t, h*w)
        return rows_as_frames(video + y, h, w)  # (b*t, c, h, w)


class ResBlock(nn.Module):
    """Per-frame residual block conditioned on the embedding, optionally followed by a temporal conv.

    ``forward(x (b*t, c_in, h, w), emb (b*t, emb_dim), frames, num_images=0) -> (b*t, c_out, h, w)``.
    The temporal convolution skips the last ``num_images`` frames (all of them: image mode).
    ``video_norm=True`` takes both GroupNorms' statistics over all video frames (LaVie); ``eps`` is
    their epsilon (1e-5; LaVie VSR's temporal modules: 1e-6).
    """

    def __init__(
        self,
        in_channels: int,
        emb_dim: int,
        out_channels: int | None = None,
        dropout: float = 0.0,
        temporal_conv: bool = False,
        temporal_dropout: float = 0.1,
        norm_groups: int = 32,
        video_norm: bool = False,
        eps: float = 1e-5,
    ):
        super().__init__()
        out_channels = out_channels or in_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.video_norm = video_norm
        self.norm1 = GroupNorm32(norm_groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_channels)
        self.norm2 = GroupNorm32(norm_groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # the block starts as its skip path
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)
        self.temporal_conv = (
            TemporalConvBlock(out_channels, temporal_dropout, norm_groups) if temporal_conv else None
        )

    def _norm(self, norm: nn.GroupNorm, x: torch.Tensor, frames: int, num_images: int) -> torch.Tensor:
        return video_group_norm(norm, x, frames, num_images) if self.video_norm else norm(x)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, frames: int, num_images: int = 0) -> torch.Tensor:
        h = self.conv1(F.silu(self._norm(self.norm1, x, frames, num_images)))  # (b*t, c_out, h, w)
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None].to(h.dtype)  # add (b*t, c_out, 1, 1)
        h = self.conv2(self.dropout(F.silu(self._norm(self.norm2, h, frames, num_images))))
        h = self.skip(x) + h
        if self.temporal_conv is not None:
            h = apply_to_video_frames(self.temporal_conv, h, frames, num_images)
        return h


class TemporalResBlock(nn.Module):
    """LaVie VSR's ResBlock along time (official ``ResnetBlock3DCNN``): Conv3d ``(k,1,1)`` then ``(3,1,1)``.

    ``forward(x (b*t, c, h, w), frames=t, emb=None (b*t, emb_dim)) -> (b*t, c, h, w)``::

        y = Conv3d_{(k,1,1)}(SiLU(GN(x)))  [+ Linear(SiLU(emb))]
        out = x + Conv3d_{(3,1,1)}(Dropout(SiLU(GN(y))))

    Both GroupNorms take their statistics over all frames (eps 1e-6). ``emb_dim=None``: no embedding
    (the block that opens LaVie VSR's spatial transformers). The last convolution starts at zero
    (vdlearn's choice, as in :class:`TemporalConvBlock`: an inserted block is the identity; the
    official code leaves it random, which only matters before a checkpoint is loaded).
    """

    def __init__(self, channels: int, kernel: int = 3, emb_dim: int | None = None, norm_groups: int = 32,
                 dropout: float = 0.0, eps: float = 1e-6):
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"The temporal kernel must be odd (same length in and out), got {kernel}.")
        self.norm1 = nn.GroupNorm(norm_groups, channels, eps=eps)
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=(kernel, 1, 1), padding=(kernel // 2, 0, 0))
        self.emb_proj = nn.Linear(emb_dim, channels) if emb_dim is not None else None
        self.norm2 = nn.GroupNorm(norm_groups, channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=(3, 1, 1), padding=(1, 0, 0))
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    @staticmethod
    def _conv(conv: nn.Conv3d, y: torch.Tensor) -> torch.Tensor:
        # the Conv3d's (c, c, k, 1, 1) kernel as a (c, c, k, 1) Conv2d on (b, c, t, h*w): the same numbers
        return F.conv2d(y, conv.weight.squeeze(-1), conv.bias, padding=(conv.padding[0], 0))

    def forward(self, x: torch.Tensor, frames: int, emb: torch.Tensor | None = None) -> torch.Tensor:
        h, w = x.shape[-2:]
        video = frames_as_rows(x, frames)  # (b, c, t, h*w)
        y = self._conv(self.conv1, F.silu(self.norm1(video)))  # statistics over (c/g, t, h, w)
        if self.emb_proj is not None:
            if emb is None:
                raise ValueError("This temporal ResBlock is conditioned on the embedding: pass emb (b*t, emb_dim).")
            e = self.emb_proj(F.silu(emb)).to(y.dtype)  # (b*t, c)
            y = y + e.unflatten(0, (-1, frames)).transpose(1, 2)[..., None]  # add (b, c, t, 1)
        y = self._conv(self.conv2, self.dropout(F.silu(self.norm2(y))))  # (b, c, t, h*w)
        return rows_as_frames(video + y, h, w)  # (b*t, c, h, w)


class TemporalResModule(nn.Module):
    """LaVie VSR's temporal module after a U-Net level (official ``TemporalModule3D``, no attention).

    ``forward(x (b*t, c, h, w), emb (b*t, emb_dim), context, frames=t, num_images=0) -> (b*t, c, h, w)``::

        y = TemporalResBlock_{k=5}(x, emb)     # along time, with the embedding
        y = ResBlock(y, emb)                   # 3x3 per frame, GroupNorm over all frames, eps 1e-6
        out = x + shift_conv(y)                # 1x1, zero-initialised: the module starts as the identity

    (``context`` is unused; it is there so that the U-Net runs this module like one of its stages.)
    The last ``num_images`` frames (independent images) pass unchanged, all of them in image mode.
    """

    def __init__(self, channels: int, emb_dim: int, norm_groups: int = 32, dropout: float = 0.0,
                 kernel: int = 5, eps: float = 1e-6):
        super().__init__()
        self.temporal_res = TemporalResBlock(channels, kernel, emb_dim, norm_groups, dropout, eps)
        self.spatial_res = ResBlock(channels, emb_dim, channels, dropout, norm_groups=norm_groups, video_norm=True,
                                    eps=eps)
        self.shift_conv = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.shift_conv.weight)
        nn.init.zeros_(self.shift_conv.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None, frames: int,
                num_images: int = 0) -> torch.Tensor:
        video_frames = frames - num_images
        if video_frames <= 0:  # image mode: nothing temporal to do
            return x
        if num_images:
            per_sample, per_emb = x.unflatten(0, (-1, frames)), emb.unflatten(0, (-1, frames))  # (b, t, ...)
            video = self(per_sample[:, :video_frames].flatten(0, 1), per_emb[:, :video_frames].flatten(0, 1),
                         context, video_frames)
            return torch.cat([video.unflatten(0, (-1, video_frames)), per_sample[:, video_frames:]], 1).flatten(0, 1)
        y = self.temporal_res(x, frames, emb)  # (b*t, c, h, w)
        y = self.spatial_res(y, emb, frames)
        return x + self.shift_conv(y)


class Downsample(nn.Module):
    """Halve height and width with a stride-2 3x3 convolution (per frame)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # (b*t, c, h/2, w/2)


class Upsample(nn.Module):
    """Double height and width: nearest-neighbour, then a 3x3 convolution (per frame)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (b*t, c, 2h, 2w)
