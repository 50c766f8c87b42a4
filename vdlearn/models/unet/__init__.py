"""The temporal U-Net of VideoCrafter1/2 (and LaVie's temporal attention), built from readable parts.

=====================  ==================================================================
``embeddings``         sinusoidal timestep / fps codes and their MLPs
``resblock``           ResBlock, the temporal convolution block, down/upsampling
``positions``          frame positions: Shaw relative, partial rotary, T5 bucket bias, absolute sinusoid
``attention``          multi-head attention through SDPA (self, cross, dual, temporal)
``transformer``        spatial and temporal transformers
``unet``               :class:`UNetConfig`, presets, :class:`VideoUNet`
``inflate``            image U-Net -> video U-Net, exactly equal at initialisation
``inspection``         temporal attention maps, parameter counts per kind of module
``layout``             vdlearn's own caption layout (no paper), as a VideoUNet subclass
=====================  ==================================================================

Quick start::

    from vdlearn.models.unet import VideoUNet
    model = VideoUNet.from_preset("toy")
    eps = model(x, timesteps, context, fps=8)        # x: (b, 4, t, h, w)

Taught in ``notebooks/04_temporal_unet.ipynb``.
"""

from vdlearn.models.unet.attention import Attention
from vdlearn.models.unet.embeddings import ScalarEmbedding, sinusoidal_embedding
from vdlearn.models.unet.inflate import inflate, make_temporal_identity
from vdlearn.models.unet.inspection import (
    parameter_breakdown,
    record_temporal_attention,
)
from vdlearn.models.unet.layout import CaptionLayout, CaptionLayoutUNet
from vdlearn.models.unet.positions import (
    PartialRotaryEmbedding,
    ShawRelativePosition,
    T5RelativeBias,
)
from vdlearn.models.unet.resblock import (
    Downsample,
    ResBlock,
    TemporalConvBlock,
    TemporalResBlock,
    TemporalResModule,
    Upsample,
)
from vdlearn.models.unet.transformer import SpatialTransformer, TemporalTransformer
from vdlearn.models.unet.unet import UNET_PRESETS, UNetConfig, VideoUNet

__all__ = [
    "UNET_PRESETS",
    "Attention",
    "CaptionLayout",
    "CaptionLayoutUNet",
    "Downsample",
    "PartialRotaryEmbedding",
    "ResBlock",
    "ScalarEmbedding",
    "ShawRelativePosition",
    "SpatialTransformer",
    "T5RelativeBias",
    "TemporalConvBlock",
    "TemporalResBlock",
    "TemporalResModule",
    "TemporalTransformer",
    "UNetConfig",
    "Upsample",
    "VideoUNet",
    "inflate",
    "make_temporal_identity",
    "parameter_breakdown",
    "record_temporal_attention",
    "sinusoidal_embedding",
]
