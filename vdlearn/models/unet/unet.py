"""The video U-Net of VideoCrafter1/2 and LaVie: config, presets and the model.

A latent video diffusion model predicts the noise ``eps`` in a noisy latent video
``x_t (b, 4, t, h, w)`` given the timestep, the caption tokens and (VideoCrafter1, kept by VideoCrafter2) the fps.
VideoCrafter1 (arXiv 2310.19512, the denoising 3D U-Net) and VideoCrafter2 (arXiv
2401.09047) start from Stable Diffusion's 2D U-Net and interleave *temporal* layers::

    emb = time_embed(t) [+ fps_embed(fps)] [+ noise_level_embed]      # one vector per frame, to every ResBlock
    [x ++ concat] -> stem (conv_in) -> init_attn (temporal)           # per frame, then over time
    down:  [ResBlock(+temporal conv) -> SpatialTransformer -> TemporalTransformer] x N, Downsample
           [-> level temporal module]
    mid:   ResBlock -> Spatial -> Temporal -> ResBlock [-> level temporal module]
    up:    [concat skip -> ResBlock -> Spatial -> Temporal] x (N+1), Upsample [-> level temporal module]
    out:   GroupNorm -> SiLU -> conv_out

(bracketed parts are config fields: ``concat`` for interpolation and super-resolution models,
the noise-level embedding and the level temporal modules for LaVie's VSR model; a SpatialTransformer
block may also hold LaVie's temporal attention and a temporal ResBlock, below. ``stem`` is
``conv_in`` here; :class:`~vdlearn.models.unet.layout.CaptionLayoutUNet`, vdlearn's own addition,
adds its caption layout there.)

Every TemporalTransformer (``init_attn`` included) attends over the frames at each pixel,
with the frame positions of ``temporal_position``: none (VideoCrafter2), Shaw relative
(VideoCrafter1), rotary + T5 bias (LaVie) or the absolute sinusoid (AnimateDiff);
see :mod:`vdlearn.models.unet.positions`. No paper's U-Net gives its *spatial* transformers
positions; ``spatial_position="absolute"`` adds Latte's 2-D sin-cos table to their tokens (an
experiment of notebook 05, preset ``toy_latte_pos``).

Everything spatial runs on frames folded into the batch, ``(b*t, c, h, w)``; the temporal
layers look across frames. Remove the temporal layers and what is left is exactly an
image U-Net applied to every frame: that is *image mode* (``forward(..., temporal=False)``)
and the starting point of *inflation* (:mod:`vdlearn.models.unet.inflate`).

LaVie (arXiv 2309.15103, sec. 3.1; ``base/models/unet.py`` and ``interpolation/models/unet.py``
of Vchitect/LaVie) is the same skeleton with Stable Diffusion 1.4's settings (8 heads at every
width, 1x1-conv projections, 768-wide CLIP text) and other temporal choices, all config fields:
no temporal convs, transformers or ``init_attn``; instead a temporal attention *inside* every
spatial transformer block (``block_temporal_attention``), ResBlock and output GroupNorms over all
frames (``video_group_norm``) and, for the interpolation model, a sparse-causal ``attn1``
(``sparse_causal_attention``) and the conditioning latent concatenated to the input
(``concat_channels=4``). Presets ``lavie_base`` and ``lavie_interpolation``; official weights
load through :mod:`vdlearn.pretrained.lavie`.

LaVie's video super-resolution U-Net (Wang et al. 2023; ``vsr/models/unet.py`` of Vchitect/LaVie,
preset ``lavie_vsr``) starts from Stable Diffusion's x4 upscaler instead: widths (256, 512, 512, 1024),
no attention at the widest level and attention at the deepest, linear projections, 1024-wide
OpenCLIP-H text, the noise-augmented low-resolution RGB video concatenated to the latent
(``concat_channels=3``) and its noise level as a class embedding added to the time embedding
(``noise_level_classes``); ``attn1`` is a cross-attention to the text in levels 1 and 2
(``cross_only_levels``). Its temporal layers: the base model's in-block temporal attention, a
temporal ResBlock opening every spatial transformer (``transformer_temporal_conv``) and a temporal
module after every level, down, middle and up (``level_temporal_modules``; see
:mod:`vdlearn.models.unet.resblock`). It predicts ``v`` (schedule preset ``lavie_vsr``).

Parameters fall into two groups, ``"spatial"`` (the image U-Net) and ``"temporal"``
(temporal convs, temporal transformers, ``init_attn``, LaVie's in-block temporal attentions and the
fps embedding): VideoCrafter2's
recipe fine-tunes the spatial group only (``model.freeze("temporal")``).

Taught in ``notebooks/04_temporal_unet.ipynb``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vdlearn.models.unet.attention import POSITION_KINDS
from vdlearn.models.unet.embeddings import ScalarEmbedding
from vdlearn.models.unet.resblock import (
    Downsample,
    GroupNorm32,
    ResBlock,
    TemporalConvBlock,
    TemporalResBlock,
    TemporalResModule,
    Upsample,
    apply_to_video_frames,
    fold_frames,
    unfold_frames,
    video_group_norm,
)
from vdlearn.models.unet.transformer import (
    BLOCK_TEMPORAL_KINDS,
    BlockTemporalAttention,
    SpatialTransformer,
    TemporalTransformer,
)

GROUPS = ("spatial", "temporal")


@dataclass
class UNetConfig:
    """Everything that shapes a :class:`VideoUNet`. Presets: :data:`UNET_PRESETS`."""

    # --- input and output -------------------------------------------------------------
    in_channels: int = 4  # channels of the noisy latent x_t (4 for the SD VAE)
    out_channels: int | None = None  # channels predicted (eps); None means in_channels
    concat_channels: int = 0  # extra condition channels concatenated to x_t before conv_in
    #                           (interpolation / super-resolution / reference-frame models)
    # --- width and depth --------------------------------------------------------------
    model_channels: int = 320  # width of the first level (SD: 320)
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)  # width of level i = model_channels * channel_mult[i]
    num_res_blocks: int = 2  # ResBlocks per level on the way down (up: one more)
    attention_levels: tuple[int, ...] = (0, 1, 2)  # levels (0 = full resolution) that get transformers
    head_channels: int = 64  # channels per attention head; heads = width // head_channels
    attention_heads: int | None = None  # a fixed number of heads at every width instead (SD 1.x and LaVie: 8,
    #                                     head width = width // attention_heads); None: use head_channels
    transformer_depth: int = 1  # transformer blocks per spatial transformer
    norm_groups: int = 32  # GroupNorm groups everywhere (widths must be divisible by it)
    video_group_norm: bool = False  # ResBlock and output GroupNorms take statistics over (c/g, t, h, w), all
    #                                 frames of a video together (LaVie's 5-D GroupNorm); False: per frame
    spatial_projection: str = "linear"  # proj_in/proj_out of the spatial transformers: "linear" (SD 2.x,
    #                                     VideoCrafter) | "conv" (1x1 Conv2d: SD 1.x, LaVie)
    dropout: float = 0.0  # dropout in ResBlocks and attention
    # --- conditioning -----------------------------------------------------------------
    context_dim: int | None = 1024  # width of the text tokens (OpenCLIP-H: 1024); None: no cross-
    #                                 attention input (attn2 becomes a second self-attention)
    fps_cond: bool = True  # add an fps embedding to the timestep embedding (VideoCrafter1; VideoCrafter2 keeps it)
    image_cross_attention: bool = False  # VideoCrafter1 I2V: extra k/v for image tokens in attn2
    text_context_len: int = 77  # with image_cross_attention: how many leading context tokens are text
    image_cross_attention_scale: float = 1.0  # weight of the image branch of dual cross-attention
    noise_level_classes: int = 0  # a table nn.Embedding(n, 4*model_channels) of the low-res noise level added to
    #                               the time embedding (LaVie VSR / SD x4 upscaler: 1000); 0: no noise level input
    max_noise_level: int = 350  # with noise_level_classes: the largest noise level accepted (the official check)
    cross_only_levels: tuple[int, ...] = ()  # levels whose attn1 attends to the context instead of the pixels
    #                                          (diffusers' only_cross_attention; SD x4 upscaler / LaVie VSR: 1, 2)
    # --- temporal layers --------------------------------------------------------------
    temporal_conv: bool = True  # 4-stage Conv3d(3,1,1) block after every ResBlock (VideoCrafter2 and VideoCrafter1 I2V)
    temporal_conv_dropout: float = 0.1  # dropout inside the temporal conv block
    temporal_attention: bool = True  # a TemporalTransformer after every SpatialTransformer
    temporal_transformer_depth: int = 1  # transformer blocks per temporal transformer
    init_temporal_attention: bool = True  # 'init_attn': a temporal transformer right after conv_in
    init_attention_heads: int = 8  # its heads (of head_channels each)
    spatial_position: str = "none"  # "none" (every paper's U-Net) | "absolute" (Latte's 2-D sin-cos table added
    #                                  to the tokens of every spatial transformer: vdlearn's transplant)
    temporal_position: str = "none"  # "none" (VC2) | "relative" (Shaw, VC1) | "rope_bias" (LaVie) | "absolute"
    #                                   (AnimateDiff: the frame-index sinusoid added to the attention input);
    #                                   used by every temporal attention (transformers and in-block)
    block_temporal_attention: str = "none"  # a temporal attention inside every spatial transformer block:
    #                                   "none" | "after_cross" (LaVie base: attn1, attn2, temporal, ff) |
    #                                   "after_ff" (LaVie interpolation: attn1, attn2, ff, temporal)
    sparse_causal_attention: bool = False  # attn1 of frame i attends to frames 0 and i-1 (LaVie interpolation)
    transformer_temporal_conv: bool = False  # a residual Conv3d (3,1,1) x2 block opening every spatial transformer
    #                                          (LaVie VSR's resblock_temporal)
    level_temporal_modules: bool = False  # a temporal module after every down level, the middle and every up level:
    #                                       Conv3d (5,1,1) + (3,1,1), a ResBlock, a zero-init 1x1 (LaVie VSR)
    max_relative_distance: int = 16  # "relative": distances clipped to +-this (table of 2*16+1 rows)
    rotary_dim: int = 32  # "rope_bias": channels of each head that are rotated
    bias_buckets: int = 32  # "rope_bias": T5 distance buckets
    bias_max_distance: int = 32  # "rope_bias": distance at which the last bucket starts
    # --- memory -----------------------------------------------------------------------
    gradient_checkpointing: bool = False  # recompute each stage's activations in backward: less memory,
    #                                       one extra forward pass per training step

    def __post_init__(self):
        self.channel_mult = tuple(self.channel_mult)
        self.attention_levels = tuple(self.attention_levels)
        self.cross_only_levels = tuple(self.cross_only_levels)
        if self.spatial_position not in ("none", "absolute"):
            raise ValueError(f"spatial_position must be 'none' or 'absolute', got {self.spatial_position!r}.")
        if self.temporal_position not in POSITION_KINDS:
            raise ValueError(f"temporal_position must be one of {POSITION_KINDS}, got {self.temporal_position!r}.")
        if self.block_temporal_attention not in BLOCK_TEMPORAL_KINDS:
            raise ValueError(f"block_temporal_attention must be one of {BLOCK_TEMPORAL_KINDS}, "
                             f"got {self.block_temporal_attention!r}.")
        if self.spatial_projection not in ("linear", "conv"):
            raise ValueError(f"spatial_projection must be 'linear' or 'conv', got {self.spatial_projection!r}.")
        if self.attention_heads is not None and self.attention_heads < 1:
            raise ValueError(f"attention_heads must be a positive number of heads or None, got {self.attention_heads}.")
        bad = [lvl for lvl in self.attention_levels if not 0 <= lvl < len(self.channel_mult)]
        if bad:
            raise ValueError(f"attention_levels {bad} do not exist: there are {len(self.channel_mult)} levels.")
        for mult in self.channel_mult:
            width = self.model_channels * mult
            heads = (f"head_channels={self.head_channels}" if self.attention_heads is None
                     else f"attention_heads={self.attention_heads}")
            if width % self.norm_groups or width % (self.attention_heads or self.head_channels):
                raise ValueError(
                    f"Width {width} (model_channels {self.model_channels} x {mult}) must be divisible by "
                    f"norm_groups={self.norm_groups} and {heads}."
                )
        if self.image_cross_attention and self.context_dim is None:
            raise ValueError("image_cross_attention needs a context_dim.")
        if self.cross_only_levels:
            bad = [lvl for lvl in self.cross_only_levels if lvl not in self.attention_levels]
            if bad or self.context_dim is None or self.sparse_causal_attention:
                raise ValueError(
                    f"cross_only_levels {self.cross_only_levels} make attn1 a cross-attention: each must be one of "
                    f"attention_levels {self.attention_levels} (not {bad}), with a context_dim and without "
                    f"sparse_causal_attention.")
        if self.noise_level_classes < 0:
            raise ValueError(f"noise_level_classes must be >= 0 (0: no noise-level input), got {self.noise_level_classes}.")
        if self.noise_level_classes and not 0 <= self.max_noise_level < self.noise_level_classes:
            raise ValueError(f"max_noise_level must lie in 0..noise_level_classes-1 ({self.noise_level_classes - 1}), "
                             f"got {self.max_noise_level}.")

    @property
    def out_ch(self) -> int:
        return self.out_channels if self.out_channels is not None else self.in_channels

    @property
    def has_temporal_layers(self) -> bool:
        return (self.temporal_conv or self.temporal_attention or self.init_temporal_attention or self.fps_cond
                or self.block_temporal_attention != "none" or self.transformer_temporal_conv
                or self.level_temporal_modules)

    def image_only(self) -> UNetConfig:
        """The same U-Net without temporal layers or fps: an image U-Net (applied per frame).

        ``video_group_norm`` and ``sparse_causal_attention`` are kept: they have no weights of their
        own, and on a single frame (image mode) they are a per-frame norm and a self-attention. The
        noise-level embedding and ``cross_only_levels`` are spatial (the SD x4 upscaler's) and kept.
        """
        return dataclasses.replace(self, temporal_conv=False, temporal_attention=False,
                                   init_temporal_attention=False, fps_cond=False, block_temporal_attention="none",
                                   transformer_temporal_conv=False, level_temporal_modules=False)

    @classmethod
    def preset(cls, name: str, **overrides) -> UNetConfig:
        """A named preset (see :data:`UNET_PRESETS`), with fields overridden by keyword."""
        if name not in UNET_PRESETS:
            raise KeyError(f"Unknown U-Net preset {name!r}. Available: {', '.join(UNET_PRESETS)}.")
        return dataclasses.replace(UNET_PRESETS[name], **overrides)


#: Named configurations. Presets are data: build one with ``VideoUNet.from_preset(name)``.
UNET_PRESETS: dict[str, UNetConfig] = {
    # 5.1M parameters for 32x32 frames as 4 x 8 x 8 (or 4 x 16 x 16) latents: trains on a CPU.
    # The VideoCrafter2 layout (temporal conv, init_attn, fps, attention at all but the deepest
    # level), narrower (32/64/128) and shallower (one ResBlock per level).
    "toy": UNetConfig(
        model_channels=32, channel_mult=(1, 2, 4), num_res_blocks=1, attention_levels=(0, 1),
        head_channels=16, norm_groups=8, context_dim=64, init_attention_heads=2,
    ),
    # 0.36M parameters: notebook 03's unconditional denoiser of 32x32 RGB frames, (b, 3, 1, 32, 32).
    # Image mode of the same class: no temporal layers, no fps, no text (context_dim=None: attn2 is a
    # second self-attention); 16/32/32 wide, attention only at the 8x8 level and in the middle.
    "toy_image": UNetConfig(
        in_channels=3, model_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, attention_levels=(2,),
        head_channels=16, norm_groups=8, context_dim=None, fps_cond=False, temporal_conv=False,
        temporal_attention=False, init_temporal_attention=False,
    ),
    # VideoCrafter2 text-to-video, 320x512 (configs/inference_t2v_512_v2.0.yaml)
    "videocrafter2_t2v_512": UNetConfig(),
    # VideoCrafter1 text-to-video, 576x1024: no temporal conv, Shaw relative positions
    "videocrafter1_t2v_1024": UNetConfig(temporal_conv=False, temporal_position="relative"),
    # VideoCrafter1 text-to-video, 320x512 v1.0: as the 1024 model, without fps conditioning
    "videocrafter1_t2v_512": UNetConfig(temporal_conv=False, temporal_position="relative", fps_cond=False),
    # VideoCrafter1 image-to-video, 320x512: VideoCrafter2's layout plus dual cross-attention
    "videocrafter1_i2v_512": UNetConfig(image_cross_attention=True),
    # LaVie base text-to-video, 320x512 (Vchitect/LaVie base/): Stable Diffusion 1.4's U-Net (8 heads,
    # 1x1-conv projections, CLIP ViT-L/14 text of width 768), video GroupNorm in the ResBlocks and the
    # output, and in every transformer block a temporal attention (rotary + T5 bias) after the cross-attention
    "lavie_base": UNetConfig(
        context_dim=768, attention_heads=8, spatial_projection="conv", video_group_norm=True, fps_cond=False,
        temporal_conv=False, temporal_attention=False, init_temporal_attention=False,
        block_temporal_attention="after_cross", temporal_position="rope_bias",
    ),
    # LaVie interpolation, 16 -> 61 frames (Vchitect/LaVie interpolation/): the base layout with the
    # conditioning latent concatenated (8 input channels), a sparse-causal attn1 and a position-free
    # temporal attention after the feed-forward
    "lavie_interpolation": UNetConfig(
        concat_channels=4, context_dim=768, attention_heads=8, spatial_projection="conv", video_group_norm=True,
        fps_cond=False, temporal_conv=False, temporal_attention=False, init_temporal_attention=False,
        block_temporal_attention="after_ff", temporal_position="none", sparse_causal_attention=True,
    ),
    # LaVie video super-resolution, 320x512 -> 1280x2048 (Vchitect/LaVie vsr/, configs/unet_3d_config.json):
    # Stable Diffusion's x4 upscaler U-Net (widths 256/512/512/1024, attention at levels 1-3, 8 heads, linear
    # projections, OpenCLIP-H text of width 1024, attn1 a cross-attention at levels 1 and 2), the noisy latent
    # plus the noise-augmented low-res RGB video (4 + 3 channels), the noise level as a class embedding, video
    # GroupNorm; temporal layers: in-block temporal attention (rotary + T5 bias) after attn2, a temporal
    # ResBlock opening every spatial transformer, a temporal module after every level
    "lavie_vsr": UNetConfig(
        concat_channels=3, model_channels=256, channel_mult=(1, 2, 2, 4), attention_levels=(1, 2, 3),
        attention_heads=8, context_dim=1024, spatial_projection="linear", video_group_norm=True, fps_cond=False,
        temporal_conv=False, temporal_attention=False, init_temporal_attention=False,
        block_temporal_attention="after_cross", temporal_position="rope_bias", noise_level_classes=1000,
        cross_only_levels=(1, 2), transformer_temporal_conv=True, level_temporal_modules=True,
    ),
}


class UNetStage(nn.Module):
    """One step of the U-Net: ``ResBlock -> [SpatialTransformer -> TemporalTransformer] -> [resample]``.

    Any part may be absent (a downsampling stage is only a :class:`Downsample`).
    """

    def __init__(self, res=None, spatial=None, temporal=None, resample=None):
        super().__init__()
        self.res, self.spatial, self.temporal, self.resample = res, spatial, temporal, resample

    def forward(self, h, emb, context, frames: int, num_images: int):
        if self.res is not None:
            h = self.res(h, emb, frames, num_images)
        if self.spatial is not None:
            h = self.spatial(h, context, frames, num_images)
        if self.temporal is not None:
            h = apply_to_video_frames(self.temporal, h, frames, num_images)
        if self.resample is not None:
            h = self.resample(h)
        return h


class MiddleBlock(nn.Module):
    """``ResBlock -> SpatialTransformer -> TemporalTransformer -> ResBlock`` at the lowest resolution."""

    def __init__(self, res1, spatial, temporal, res2):
        super().__init__()
        self.res1, self.spatial, self.temporal, self.res2 = res1, spatial, temporal, res2

    def forward(self, h, emb, context, frames: int, num_images: int):
        h = self.res1(h, emb, frames, num_images)
        h = self.spatial(h, context, frames, num_images)
        if self.temporal is not None:
            h = apply_to_video_frames(self.temporal, h, frames, num_images)
        return self.res2(h, emb, frames, num_images)


class VideoUNet(nn.Module):
    """The video U-Net of VideoCrafter1/2 and LaVie: one class, the presets choose the layout.

    ``forward(x (b, c, t, h, w), timesteps (b,), context (b, n, d) | (b, t, n, d) | None,
    fps (b,) | None) -> (b, c_out, t, h, w)``.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        emb_dim = 4 * cfg.model_channels

        def heads_of(channels: int) -> int:
            return cfg.attention_heads or channels // cfg.head_channels

        def head_width(channels: int) -> int:
            return channels // cfg.attention_heads if cfg.attention_heads else cfg.head_channels

        positions = {"position": cfg.temporal_position, "max_distance": cfg.max_relative_distance,
                     "rotary_dim": cfg.rotary_dim, "bias_buckets": cfg.bias_buckets,
                     "bias_max_distance": cfg.bias_max_distance}
        temporal_options = {"norm_groups": cfg.norm_groups, **positions, "dropout": cfg.dropout}

        def res(cin, cout):
            return ResBlock(cin, emb_dim, cout, cfg.dropout, cfg.temporal_conv, cfg.temporal_conv_dropout,
                            cfg.norm_groups, cfg.video_group_norm)

        def spatial(ch, level=None):  # level None: the middle block
            return SpatialTransformer(ch, heads_of(ch), head_width(ch), cfg.transformer_depth, cfg.context_dim,
                                      cfg.dropout, cfg.norm_groups, cfg.image_cross_attention,
                                      cfg.text_context_len, cfg.image_cross_attention_scale,
                                      cfg.spatial_position, cfg.spatial_projection, cfg.block_temporal_attention,
                                      positions, cfg.sparse_causal_attention, level in cfg.cross_only_levels,
                                      cfg.transformer_temporal_conv)

        def level_temporal(ch):  # LaVie VSR's temporal module after a level
            return TemporalResModule(ch, emb_dim, cfg.norm_groups, cfg.dropout) if cfg.level_temporal_modules else None

        def temporal(ch, heads=None):
            if not cfg.temporal_attention and heads is None:
                return None
            if heads is not None:  # init_attn: its own number of heads of head_channels each
                return TemporalTransformer(ch, heads, cfg.head_channels, cfg.temporal_transformer_depth,
                                           **temporal_options)
            return TemporalTransformer(ch, heads_of(ch), head_width(ch), cfg.temporal_transformer_depth,
                                       **temporal_options)

        # --- embeddings and stem -------------------------------------------------------
        self.time_embed = ScalarEmbedding(cfg.model_channels, emb_dim)
        self.fps_embed = ScalarEmbedding(cfg.model_channels, emb_dim) if cfg.fps_cond else None
        if self.fps_embed is not None:  # starts silent: adding fps never disturbs a trained model
            nn.init.zeros_(self.fps_embed.linear_2.weight)
            nn.init.zeros_(self.fps_embed.linear_2.bias)
        # LaVie VSR / SD x4 upscaler: one learned vector per noise level of the low-res input (diffusers' class_embedding)
        self.noise_level_embed = nn.Embedding(cfg.noise_level_classes, emb_dim) if cfg.noise_level_classes else None
        in_ch = cfg.in_channels + cfg.concat_channels
        self.conv_in = nn.Conv2d(in_ch, cfg.model_channels, 3, padding=1)
        self.init_attn = (temporal(cfg.model_channels, heads=cfg.init_attention_heads)
                          if cfg.init_temporal_attention else None)

        # --- down path ------------------------------------------------------------------
        self.down_stages = nn.ModuleList()
        # LaVie VSR: a temporal module after the last stage of every level (index of that stage -> module)
        self.down_temporal_modules = nn.ModuleList() if cfg.level_temporal_modules else None
        self._down_level_ends: dict[int, int] = {}
        skip_channels = [cfg.model_channels]
        ch = cfg.model_channels
        for level, mult in enumerate(cfg.channel_mult):
            attn = level in cfg.attention_levels
            for _ in range(cfg.num_res_blocks):
                out = cfg.model_channels * mult
                self.down_stages.append(UNetStage(res(ch, out), spatial(out, level) if attn else None,
                                                  temporal(out) if attn else None))
                ch = out
                skip_channels.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.down_stages.append(UNetStage(resample=Downsample(ch)))
                skip_channels.append(ch)
            if self.down_temporal_modules is not None:
                self._down_level_ends[len(self.down_stages) - 1] = level
                self.down_temporal_modules.append(level_temporal(ch))

        # --- middle ---------------------------------------------------------------------
        self.mid = MiddleBlock(res(ch, ch), spatial(ch), temporal(ch), res(ch, ch))
        self.mid_temporal_module = level_temporal(ch)

        # --- up path --------------------------------------------------------------------
        self.up_stages = nn.ModuleList()
        self.up_temporal_modules = nn.ModuleList() if cfg.level_temporal_modules else None
        self._up_level_ends: dict[int, int] = {}
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            attn = level in cfg.attention_levels
            for i in range(cfg.num_res_blocks + 1):
                out = cfg.model_channels * mult
                up = Upsample(out) if (level > 0 and i == cfg.num_res_blocks) else None
                self.up_stages.append(UNetStage(res(ch + skip_channels.pop(), out),
                                                spatial(out, level) if attn else None,
                                                temporal(out) if attn else None, up))
                ch = out
            if self.up_temporal_modules is not None:
                self._up_level_ends[len(self.up_stages) - 1] = len(self.up_temporal_modules)
                self.up_temporal_modules.append(level_temporal(ch))

        # --- output ---------------------------------------------------------------------
        self.out_norm = GroupNorm32(cfg.norm_groups, ch, eps=1e-5)
        self.conv_out = nn.Conv2d(ch, cfg.out_ch, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # the untrained model predicts zeros
        nn.init.zeros_(self.conv_out.bias)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> VideoUNet:
        """``VideoUNet.from_preset("toy")``; keyword arguments override config fields."""
        return cls(UNetConfig.preset(name, **overrides))

    # --- input checks ----------------------------------------------------------------------
    def _prepare(self, x, timesteps, context, fps, concat, temporal):
        cfg = self.config
        if x.ndim != 5:
            hint = " For an image batch (b, c, h, w) use x[:, :, None] (one frame)." if x.ndim == 4 else ""
            raise ValueError(f"Expected a video latent of shape (b, c, t, h, w), got {tuple(x.shape)}.{hint}")
        b, c, t, h, w = x.shape
        if c != cfg.in_channels:
            raise ValueError(f"Expected {cfg.in_channels} input channels (config.in_channels), got {c}.")
        factor = 2 ** (len(cfg.channel_mult) - 1)
        if h % factor or w % factor:
            raise ValueError(
                f"Height and width must be divisible by {factor} ({len(cfg.channel_mult) - 1} downsamplings), "
                f"got {h}x{w}. Crop or pad the latent."
            )
        if cfg.concat_channels:
            if concat is None or tuple(concat.shape) != (b, cfg.concat_channels, t, h, w):
                got = None if concat is None else tuple(concat.shape)
                raise ValueError(
                    f"This model takes {cfg.concat_channels} extra condition channels: pass "
                    f"concat of shape {(b, cfg.concat_channels, t, h, w)}, got {got}."
                )
            x = torch.cat([x, concat.to(x.dtype)], dim=1)
        elif concat is not None:
            raise ValueError("concat was given but the model has concat_channels=0. Set it in the config.")

        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0 or timesteps.numel() == 1:
            timesteps = timesteps.reshape(1).expand(b)
        if timesteps.shape != (b,) and timesteps.shape != (b, t):
            raise ValueError(f"Expected timesteps of shape ({b},) (one per video) or ({b}, {t}) (one per frame), "
                             f"got {tuple(timesteps.shape)}.")

        if cfg.fps_cond and temporal:
            if fps is None:
                raise ValueError(
                    "This model is conditioned on frames per second (config.fps_cond=True): pass fps=..., "
                    "a number or a tensor of shape (b,). VideoCrafter2's sampler uses fps=28 at 512 px."
                )
            fps = torch.as_tensor(fps, device=x.device)
            if fps.ndim == 0 or fps.numel() == 1:
                fps = fps.reshape(1).expand(b)
            if fps.shape != (b,):
                raise ValueError(f"Expected fps of shape ({b},), got {tuple(fps.shape)}.")

        if context is not None:
            if context.ndim == 4:  # one context per frame (e.g. a caption per image in joint training)
                if context.shape[:2] != (b, t):
                    raise ValueError(f"A per-frame context must be (b, t, n, d) = ({b}, {t}, n, d), "
                                     f"got {tuple(context.shape)}.")
                context = context.flatten(0, 1)  # (b*t, n, d)
            elif context.ndim != 3 or context.shape[0] != b:
                raise ValueError(f"Expected context of shape ({b}, n, d) or ({b}, {t}, n, d), got {tuple(context.shape)}.")
            if cfg.context_dim is None:
                raise ValueError("This model has no cross-attention conditioning (context_dim=None): pass context=None.")
            context = context.to(x.dtype)
        elif cfg.context_dim is not None:
            raise ValueError(
                f"This model is conditioned on a context of width {cfg.context_dim} (text tokens): pass "
                f"context of shape (b, n, {cfg.context_dim}). For unconditional use, pass the embedding of "
                f"the empty caption, or build the model with context_dim=None."
            )
        return x, timesteps, context, fps

    # --- forward ---------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor | float,
        context: torch.Tensor | None = None,
        fps: torch.Tensor | float | None = None,
        *,
        concat: torch.Tensor | None = None,
        noise_level: torch.Tensor | int | None = None,
        num_images: int = 0,
        temporal: bool = True,
    ) -> torch.Tensor:
        """Predict the noise of ``x``.

        Args:
            x: noisy latents ``(b, in_channels, t, h, w)``.
            timesteps: diffusion step per video, ``(b,)`` (a scalar is broadcast), or per frame
                ``(b, t)`` (appended images with their own noise level, joint image-video training).
            context: text tokens ``(b, n, context_dim)`` shared by all frames, or one
                context per frame ``(b, t, n, context_dim)``; ``None`` only if ``context_dim`` is None.
                With ``image_cross_attention``: ``text_context_len`` text tokens then image tokens.
            fps: frames per second per video ``(b,)`` or a number; required if ``fps_cond``
                (except in image mode), ignored otherwise.
            concat: extra condition channels ``(b, concat_channels, t, h, w)`` if configured (LaVie VSR:
                the noise-augmented low-resolution RGB video, upsampled to the latent's ``h, w``).
            noise_level: the noise level of that low-resolution input per video ``(b,)`` (integers in
                ``0..max_noise_level``; a number is broadcast); required if ``noise_level_classes``.
            num_images: the last ``num_images`` of the ``t`` frames are independent images
                (joint image-video training): temporal layers skip them.
            temporal: ``False`` runs in image mode: every temporal layer and the fps embedding
                are skipped, each frame is denoised on its own by the spatial layers alone.

        Returns:
            ``(b, out_channels, t, h, w)``.
        """
        t = x.shape[2] if x.ndim == 5 else 0
        if not 0 <= num_images <= t:
            raise ValueError(f"num_images must be between 0 and the number of frames ({t}), got {num_images}.")
        if not temporal:
            num_images = t
        video_frames = t - num_images
        x, timesteps, context, fps = self._prepare(x, timesteps, context, fps, concat, video_frames > 0)
        b = x.shape[0]

        if timesteps.ndim == 2:  # one step per frame: appended images noised on their own (joint training)
            emb = self.time_embed(timesteps.reshape(-1)).reshape(b, t, -1)  # (b, t, E)
        else:
            emb = self.time_embed(timesteps)[:, None, :].expand(b, t, -1)  # (b, t, E): every frame gets its video's
        if self.noise_level_embed is not None:  # LaVie VSR: + the low-res input's noise level
            emb = emb + self.noise_level_embed(self._noise_levels(noise_level, b, x.device))[:, None, :]
        elif noise_level is not None:
            raise ValueError("noise_level was given but the model has no noise-level embedding "
                             "(config.noise_level_classes=0).")
        if self.fps_embed is not None and video_frames > 0:
            is_video = (torch.arange(t, device=x.device) < video_frames).to(emb.dtype)  # images get no fps
            emb = emb + self.fps_embed(fps)[:, None, :] * is_video[None, :, None]
        emb = emb.reshape(b * t, -1).to(x.dtype)  # (b*t, E)

        h = fold_frames(x)  # (b*t, c, h, w)
        if self._channels_last(x.device):
            # memory order (b*t, h, w, c): per-pixel channel vectors are contiguous, which makes the
            # token reshapes of the transformers and temporal convs views instead of copies
            h = h.contiguous(memory_format=torch.channels_last)
        h = self.stem(h, x, context, fps, num_images)  # (b*t, model_channels, h, w)
        if self.init_attn is not None:
            h = apply_to_video_frames(self.init_attn, h, t, num_images)
        skips = [h]
        for k, stage in enumerate(self.down_stages):
            h = self._run(stage, h, emb, context, t, num_images)
            skips.append(h)
            if k in self._down_level_ends:  # LaVie VSR: the skip is kept from before the level's temporal module
                h = self._run(self.down_temporal_modules[self._down_level_ends[k]], h, emb, context, t, num_images)
        h = self._run(self.mid, h, emb, context, t, num_images)
        if self.mid_temporal_module is not None:
            h = self._run(self.mid_temporal_module, h, emb, context, t, num_images)
        for k, stage in enumerate(self.up_stages):
            h = torch.cat([h, skips.pop()], dim=1)  # (b*t, c + c_skip, h, w)
            h = self._run(stage, h, emb, context, t, num_images)
            if k in self._up_level_ends:
                h = self._run(self.up_temporal_modules[self._up_level_ends[k]], h, emb, context, t, num_images)
        if self.config.video_group_norm:  # LaVie: statistics over all frames of a video
            h = video_group_norm(self.out_norm, h, t, num_images)
        else:
            h = self.out_norm(h)
        h = self.conv_out(F.silu(h))  # (b*t, c_out, h, w)
        return unfold_frames(h, t).contiguous()  # (b, c_out, t, h, w)

    def stem(self, h: torch.Tensor, x: torch.Tensor, context: torch.Tensor | None, fps: torch.Tensor | None,
             num_images: int) -> torch.Tensor:
        """``conv_in`` on the folded frames ``h (b*t, c_in, h, w)``; ``x``, ``context`` and ``fps (b,)`` are
        there for subclasses that add to the stem (e.g. :class:`vdlearn.models.unet.layout.CaptionLayoutUNet`)."""
        return self.conv_in(h)  # (b*t, model_channels, h, w)

    def _noise_levels(self, noise_level, b: int, device: torch.device) -> torch.Tensor:
        """``noise_level`` checked and broadcast to ``(b,)`` integers (LaVie VSR's class labels)."""
        cfg = self.config
        if noise_level is None:
            raise ValueError(
                f"This model is conditioned on the noise level of its low-resolution input "
                f"(config.noise_level_classes={cfg.noise_level_classes}): pass noise_level=..., an integer in "
                f"0..{cfg.max_noise_level} or a tensor of shape (b,). LaVie's VSR sampler uses 50.")
        levels = torch.as_tensor(noise_level, device=device)
        if levels.is_floating_point() or levels.is_complex() or levels.dtype == torch.bool:
            raise ValueError(f"noise_level must be integers (it indexes an embedding table), got {levels.dtype}.")
        if levels.ndim == 0 or levels.numel() == 1:
            levels = levels.reshape(1).expand(b)
        if levels.shape != (b,):
            raise ValueError(f"Expected noise_level of shape ({b},) (one per video), got {tuple(levels.shape)}.")
        if levels.device.type != "meta" and (levels.min() < 0 or levels.max() > cfg.max_noise_level):
            raise ValueError(f"noise_level must lie in 0..{cfg.max_noise_level} (config.max_noise_level), "
                             f"got {levels.tolist()}.")
        return levels.long()

    #: Memory layout of the activations: True channels-last, False contiguous, None automatic
    #: (channels-last on CPU, where it is measurably faster; contiguous elsewhere).
    channels_last: bool | None = None

    def _channels_last(self, device: torch.device) -> bool:
        return self.channels_last if self.channels_last is not None else device.type == "cpu"

    def _run(self, stage, h, emb, context, frames, num_images):
        if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(stage, h, emb, context, frames, num_images, use_reentrant=False)
        return stage(h, emb, context, frames, num_images)

    # --- parameter groups ------------------------------------------------------------------
    def temporal_modules(self) -> list[nn.Module]:
        """Modules that exist only in the video model: temporal convs/transformers, init_attn, LaVie's
        in-block temporal attentions, LaVie VSR's temporal ResBlocks and modules, fps embedding."""
        kinds = (TemporalTransformer, TemporalConvBlock, BlockTemporalAttention, TemporalResBlock, TemporalResModule)
        mods = [m for m in self.modules() if isinstance(m, kinds)]
        if self.fps_embed is not None:
            mods.append(self.fps_embed)
        return mods

    def named_parameter_groups(self) -> dict[str, dict[str, nn.Parameter]]:
        """``{"spatial": {name: param}, "temporal": {name: param}}``, every parameter in exactly one group."""
        temporal_ids = {id(p) for m in self.temporal_modules() for p in m.parameters()}
        groups: dict[str, dict[str, nn.Parameter]] = {g: {} for g in GROUPS}
        for name, p in self.named_parameters():
            groups["temporal" if id(p) in temporal_ids else "spatial"][name] = p
        return groups

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"spatial": [...], "temporal": [...]}``: ready for an optimizer's param groups."""
        return {g: list(ps.values()) for g, ps in self.named_parameter_groups().items()}

    def _group(self, group: str) -> list[nn.Parameter]:
        if group not in GROUPS:
            raise ValueError(f"Unknown parameter group {group!r}; choose one of {GROUPS}.")
        return self.parameter_groups()[group]

    def freeze(self, group: str) -> VideoUNet:
        """Stop gradients for a group (``"spatial"`` or ``"temporal"``); returns the model."""
        for p in self._group(group):
            p.requires_grad_(False)
        return self

    def unfreeze(self, group: str) -> VideoUNet:
        """Train a group again; returns the model."""
        for p in self._group(group):
            p.requires_grad_(True)
        return self

    def count_parameters(self) -> dict[str, int]:
        """Number of parameters per group and in total."""
        counts = {g: sum(p.numel() for p in ps) for g, ps in self.parameter_groups().items()}
        counts["total"] = sum(counts.values())
        return counts
