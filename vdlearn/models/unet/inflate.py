"""Inflation: turn a trained image U-Net into a video U-Net that starts out identical.

Every video model in this course starts from an image model (Stable Diffusion):
VideoCrafter1 (arXiv 2310.19512) and VideoCrafter2 (arXiv 2401.09047) keep SD 2.1's
spatial layers and insert temporal ones; LaVie (arXiv 2309.15103, base T2V model) does
the same from SD 1.4. The trick that makes this safe is to insert every temporal layer
as an **identity**:

* a temporal transformer returns ``x + proj_out(...)`` with ``proj_out`` zero, so ``x``;
* a temporal convolution block returns ``x + conv4(...)`` with ``conv4`` zero, so ``x``;
* the fps embedding adds ``linear_2(...)`` with ``linear_2`` zero, so nothing (vdlearn's
  choice: VideoCrafter's ``fps_embedding`` starts as an ordinary linear layer).

So at initialisation the video U-Net computes *exactly* the image U-Net on every frame,
and training starts from the image model's quality, only learning motion on top. In
vdlearn the spatial parameter names are the same in the image and the video model, so
inflation is "build the video model, copy the state dict, zero the temporal outputs".

The reverse direction is :meth:`VideoUNet.forward` with ``temporal=False`` (image mode)
and the ``"spatial"`` parameter group.

Taught in ``notebooks/04_temporal_unet.ipynb``.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from vdlearn.models.unet.resblock import (
    TemporalConvBlock,
    TemporalResBlock,
    TemporalResModule,
)
from vdlearn.models.unet.transformer import BlockTemporalAttention, TemporalTransformer
from vdlearn.models.unet.unet import UNetConfig, VideoUNet

#: Config fields that only switch temporal layers on or off (or shape them): they may differ.
TEMPORAL_FIELDS = {
    "fps_cond", "temporal_conv", "temporal_conv_dropout", "temporal_attention", "temporal_transformer_depth",
    "init_temporal_attention", "init_attention_heads", "temporal_position", "max_relative_distance",
    "rotary_dim", "bias_buckets", "bias_max_distance", "gradient_checkpointing", "block_temporal_attention",
    "transformer_temporal_conv", "level_temporal_modules",
}


@torch.no_grad()
def make_temporal_identity(model: VideoUNet) -> VideoUNet:
    """Zero the output layer of every temporal module, so each one is an identity (in place)."""
    for module in model.modules():
        if isinstance(module, TemporalTransformer):
            nn.init.zeros_(module.proj_out.weight)
            nn.init.zeros_(module.proj_out.bias)
        elif isinstance(module, TemporalConvBlock):
            nn.init.zeros_(module.convs[-1].weight)
            nn.init.zeros_(module.convs[-1].bias)
        elif isinstance(module, BlockTemporalAttention):  # LaVie's temporal attention inside a block
            nn.init.zeros_(module.attn.to_out.weight)
            nn.init.zeros_(module.attn.to_out.bias)
        elif isinstance(module, TemporalResBlock):  # LaVie VSR's ResBlock along time
            nn.init.zeros_(module.conv2.weight)
            nn.init.zeros_(module.conv2.bias)
        elif isinstance(module, TemporalResModule):  # LaVie VSR's module after a level
            nn.init.zeros_(module.shift_conv.weight)
            nn.init.zeros_(module.shift_conv.bias)
    if model.fps_embed is not None:
        nn.init.zeros_(model.fps_embed.linear_2.weight)
        nn.init.zeros_(model.fps_embed.linear_2.bias)
    return model


def inflate(image_model: VideoUNet, config: UNetConfig | None = None, **overrides) -> VideoUNet:
    """A video U-Net whose spatial weights are ``image_model``'s and whose temporal layers are identities.

    Args:
        image_model: a trained U-Net, usually built from ``config.image_only()`` (no
            temporal layers). If it already has some, they are copied too.
        config: the video config. Default: the image model's config with VideoCrafter2's
            temporal layers switched on (temporal conv, temporal attention, init_attn, fps).
        overrides: config fields to change on top (e.g. ``temporal_position="rope_bias"``).

    Returns:
        A :class:`VideoUNet` on the image model's device and dtype that, at this point,
        computes exactly ``image_model`` on every frame.
    """
    base = image_model.config
    if config is None:
        config = dataclasses.replace(base, temporal_conv=True, temporal_attention=True,
                                     init_temporal_attention=True, fps_cond=True)
    config = dataclasses.replace(config, **overrides)
    differ = [f.name for f in dataclasses.fields(UNetConfig)
              if f.name not in TEMPORAL_FIELDS and getattr(base, f.name) != getattr(config, f.name)]
    if differ:
        raise ValueError(
            "inflate keeps the image U-Net's spatial layout; these fields differ between the image config "
            f"and the video config: {differ}. Only temporal fields ({sorted(TEMPORAL_FIELDS)}) may change."
        )
    ref = next(image_model.parameters())
    with torch.device(ref.device):
        video = VideoUNet(config).to(ref.dtype)
    state = image_model.state_dict()
    own = video.state_dict()
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise ValueError(f"The image model has parameters the video model lacks: {unexpected[:10]}.")
    missing = set(own) - set(state)
    temporal_names = set(video.named_parameter_groups()["temporal"])
    if missing - temporal_names:
        raise ValueError(f"The image model lacks spatial parameters: {sorted(missing - temporal_names)[:10]}.")
    make_temporal_identity(video)  # new temporal layers start as identities ...
    video.load_state_dict(state, strict=False)  # ... the image model's weights replace everything else
    video.train(image_model.training)
    return video
