"""The autoencoder's configuration: one dataclass, named presets as data.

The KL autoencoder of latent diffusion (Rombach et al. 2022, "High-Resolution Image
Synthesis with Latent Diffusion Models", sec. 3.1 and appendix G) is a stack of
ResNet levels. Each level but the last halves the frame size, so a config with
``len(channel_mult) == L`` compresses frames by ``f = 2 ** (L - 1)``:

* ``sd`` / ``videocrafter`` / ``lavie``: the Stable Diffusion KL-f8 autoencoder that
  VideoCrafter1/2 and LaVie apply to each frame (ch 128, mult [1, 2, 4, 4], f = 8,
  4 latent channels, latents scaled by 0.18215).
* ``toy32`` / ``toy64``: the same classes shrunk for the toy world's 32x32 and 64x64
  frames (f = 4, 4 latent channels).
* ``tiny``: the smallest network that still has every piece, for tests and smoke runs.

Taught in ``notebooks/02_latent_space.ipynb``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class VAEConfig:
    """Everything that fixes the autoencoder's shape (and its latent scale)."""

    name: str = "custom"  # preset this config came from (for messages and sidecars)
    in_channels: int = 3  # image channels going in (RGB)
    out_channels: int = 3  # image channels coming out of the decoder
    base_channels: int = 128  # width of the first level ("ch" in LDM)
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)  # width of level i = base_channels * channel_mult[i]
    num_res_blocks: int = 2  # ResnetBlocks per encoder level (the decoder uses one more per level)
    mid_attention: bool = True  # self-attention between the two middle ResnetBlocks (SD: yes)
    z_channels: int = 4  # latent channels
    double_z: bool = True  # encoder predicts mean and log-variance (a KL VAE); False: plain autoencoder
    norm_groups: int = 32  # GroupNorm groups (must divide every level's width)
    norm_eps: float = 1e-6  # GroupNorm epsilon (LDM's autoencoder uses 1e-6)
    dropout: float = 0.0  # dropout inside ResnetBlocks (0 in every released model)
    scale_factor: float = 0.18215  # latents are multiplied by this before diffusion (1 / std of latents)
    resolution: int | None = None  # frame size the model was built for; None accepts any multiple of f
    temporal_decoder: bool = False  # decode with temporal layers (VideoGen's enhanced video decoder)
    temporal_kernel: int = 3  # frames seen by each temporal convolution of the temporal decoder

    def __post_init__(self) -> None:
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        if len(self.channel_mult) < 1:
            raise ValueError("channel_mult needs at least one level, e.g. (1, 2, 4, 4).")
        for m in self.channel_mult:
            width = self.base_channels * m
            if width % self.norm_groups:
                raise ValueError(
                    f"norm_groups={self.norm_groups} must divide every level width; "
                    f"base_channels * {m} = {width} does not. Pick norm_groups dividing {self.base_channels}."
                )
        if self.temporal_kernel % 2 != 1:
            raise ValueError(f"temporal_kernel must be odd (got {self.temporal_kernel}), so frames stay aligned.")
        if self.resolution is not None and self.resolution % self.downsample_factor:
            raise ValueError(
                f"resolution {self.resolution} is not a multiple of the downsampling factor {self.downsample_factor}."
            )

    @property
    def downsample_factor(self) -> int:
        """f: how many pixels along each side one latent pixel stands for."""
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def latent_channels(self) -> int:
        """Channels of the latent tensor (the diffusion model's input)."""
        return self.z_channels

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """``(z_channels, height / f, width / f)`` for frames of the given size."""
        f = self.downsample_factor
        return (self.z_channels, height // f, width // f)

    def replace(self, **changes: Any) -> VAEConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VAEConfig:
        """Rebuild from :meth:`to_dict` output (e.g. a checkpoint's json sidecar)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown VAEConfig fields {unknown}; known fields: {sorted(known)}.")
        return cls(**d)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> VAEConfig:
        """A named preset (see :data:`PRESETS`), optionally with fields overridden."""
        if name not in PRESETS:
            raise KeyError(f"Unknown VAE preset {name!r}. Available: {sorted(PRESETS)}.")
        return cls(name=name, **{**PRESETS[name], **overrides})


_SD_KL_F8 = {
    "base_channels": 128,
    "channel_mult": (1, 2, 4, 4),
    "num_res_blocks": 2,
    "mid_attention": True,
    "z_channels": 4,
    "double_z": True,
    "norm_groups": 32,
    "norm_eps": 1e-6,
    "scale_factor": 0.18215,
    "resolution": None,  # trained at 256/512 px but fully convolutional: any multiple of 8 works
}

#: Named presets. Values are plain data; ``VAEConfig.preset(name)`` builds the dataclass.
PRESETS: dict[str, dict[str, Any]] = {
    # Stable Diffusion's KL-f8 autoencoder (83.7M parameters): LDM appendix G, ``kl-f8``.
    "sd": dict(_SD_KL_F8),
    # VideoCrafter1/2 ``first_stage_config`` (ddconfig ch 128, ch_mult [1,2,4,4], z 4): the SD VAE, per frame.
    "videocrafter": dict(_SD_KL_F8),
    # LaVie decodes ``latents / 0.18215`` with the same SD VAE, frame by frame.
    "lavie": dict(_SD_KL_F8),
    # Stable Diffusion's x4 upscaler autoencoder (stabilityai/stable-diffusion-x4-upscaler ``vae/``), which LaVie's
    # VSR stage decodes with (Vchitect/LaVie ``vsr/configs/vae_config.json``): KL-f4, three levels 128/256/512,
    # scaling_factor 0.08333. 55.3M parameters.
    "sd_x4_upscaler": {**_SD_KL_F8, "channel_mult": (1, 2, 4), "scale_factor": 0.08333},
    # The toy world's 32x32 frames -> 8x8x4 latents (f = 4, 12x fewer numbers). 0.68M parameters.
    # Narrow at full resolution (16 channels), wider below (32, 64): cheap enough to train on a CPU.
    # norm_groups 4 keeps 4 channels per group at the top level, as SD does (128 channels / 32 groups).
    # scale_factor 1.0 is a placeholder: training measures 1/std of the latents and the
    # shipped checkpoint's config carries the measured value.
    "toy32": {
        "base_channels": 16,
        "channel_mult": (1, 2, 4),
        "num_res_blocks": 1,
        "mid_attention": True,
        "z_channels": 4,
        "norm_groups": 4,
        "scale_factor": 1.0,
        "resolution": 32,
    },
    # Every piece at the smallest size: for unit tests and smoke runs (not for results).
    "tiny": {
        "base_channels": 8,
        "channel_mult": (1, 2),
        "num_res_blocks": 1,
        "mid_attention": True,
        "z_channels": 4,
        "norm_groups": 4,
        "scale_factor": 1.0,
        "resolution": None,
    },
}
# 64x64 frames (the cascade's super-resolution stage) -> 16x16x4 latents, same network.
PRESETS["toy64"] = {**PRESETS["toy32"], "resolution": 64}

__all__ = ["PRESETS", "VAEConfig"]
