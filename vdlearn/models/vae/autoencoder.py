r"""The KL autoencoder applied to videos, one frame at a time.

Latent diffusion (Rombach et al. 2022, sec. 3.1, appendix G) first trains an
autoencoder that maps an image $x$ to latents $z$ that are $f$ times smaller along each
side, then runs diffusion on $z$. VideoCrafter1/2 and LaVie use Stable Diffusion's
KL-f8 autoencoder unchanged and apply it to every frame of a clip:

    video (b, 3, t, H, W) --fold time into batch--> (b*t, 3, H, W)
        --encoder--> moments (b*t, 2z, H/f, W/f) --quant_conv--> Gaussian over z
        --decoder--> frames, unfolded back to (b, 3, t, H, W)

``quant_conv`` / ``post_quant_conv`` are 1x1 convs on the moments and on the latents;
their names come from VQGAN, where a vector quantiser sat between them.

**Scale factor.** The diffusion model wants latents of roughly unit variance. LDM
(appendix G / ``scale_by_std``) measures the standard deviation of the latents over a
batch and multiplies by $1/\mathrm{std}$: 0.18215 for the SD autoencoder. Here
:meth:`AutoencoderKL.encode_latents` returns ``scale_factor * z`` and
:meth:`AutoencoderKL.decode_latents` divides it out again; :meth:`encode` /
:meth:`decode` work on the raw, unscaled $z$.

Taught in ``notebooks/02_latent_space.ipynb``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vdlearn.device import get_device
from vdlearn.io import (
    CheckpointMismatchError,
    artifact_meta,
    data_dir,
    load_checkpoint,
    load_state_dict_checked,
    save_checkpoint,
)
from vdlearn.models.vae.blocks import batch_to_frames, frames_to_batch
from vdlearn.models.vae.config import VAEConfig
from vdlearn.models.vae.decoder import Decoder
from vdlearn.models.vae.encoder import Encoder
from vdlearn.models.vae.posterior import DiagonalGaussian
from vdlearn.models.vae.temporal_decoder import TemporalDecoder

#: The ``kind`` written into every VAE checkpoint's json, checked when loading.
CHECKPOINT_KIND = "vdlearn.vae"


class AutoencoderKL(nn.Module):
    """KL autoencoder for images ``(b, 3, H, W)`` and videos ``(b, 3, t, H, W)`` in [-1, 1].

    >>> vae = AutoencoderKL.from_preset("tiny")
    >>> video = torch.zeros(1, 3, 4, 16, 16)         # (b, c, t, h, w)
    >>> vae.encode(video).mean.shape                  # (b, z, t, h/f, w/f)
    torch.Size([1, 4, 4, 8, 8])
    """

    def __init__(self, config: VAEConfig | str = "toy32"):
        super().__init__()
        if isinstance(config, str):
            config = VAEConfig.preset(config)
        self.config = config
        moments = 2 * config.z_channels if config.double_z else config.z_channels
        self.encoder = Encoder(config)
        self.quant_conv = nn.Conv2d(moments, moments, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(config.z_channels, config.z_channels, kernel_size=1)
        self.decoder = TemporalDecoder(config) if config.temporal_decoder else Decoder(config)
        self.meta: dict = {}  # provenance and metrics of a loaded checkpoint (its json sidecar)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> AutoencoderKL:
        """A randomly initialised autoencoder of a named preset (``sd``, ``toy32``, ...)."""
        return cls(VAEConfig.preset(name, **overrides))

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    @property
    def scale_factor(self) -> float:
        return self.config.scale_factor

    @property
    def is_temporal(self) -> bool:
        """True when the decoder has temporal layers (it then needs whole clips)."""
        return isinstance(self.decoder, TemporalDecoder)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self, part: str | None = None) -> int:
        """Parameter count of the whole model, or of ``"encoder"`` / ``"decoder"``."""
        module = self if part is None else getattr(self, part)
        return sum(p.numel() for p in module.parameters())

    def with_temporal_decoder(self) -> AutoencoderKL:
        """A copy whose decoder has temporal layers, initialised so it decodes exactly like this one."""
        if self.is_temporal:
            raise ValueError("This autoencoder already has a temporal decoder.")
        video_vae = AutoencoderKL(self.config.replace(temporal_decoder=True)).to(self.device)
        missing, unexpected = video_vae.load_state_dict(self.state_dict(), strict=False)
        assert not unexpected and all(k.startswith("decoder.temporal.") for k in missing), (missing, unexpected)
        return video_vae

    def per_frame(self) -> AutoencoderKL:
        """A copy without the temporal layers (the spatial weights of this model, decoding frame by frame)."""
        vae = AutoencoderKL(self.config.replace(temporal_decoder=False)).to(self.device)
        own = {k: v for k, v in self.state_dict().items() if not k.startswith("decoder.temporal.")}
        load_state_dict_checked(vae, own, "per-frame part of the temporal autoencoder")
        return vae

    # ----------------------------------------------------------------- input checks
    def _check_pixels(self, x: torch.Tensor) -> None:
        cfg = self.config
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"Expected a float tensor of frames in [-1, 1], got {type(x).__name__} "
                            f"{getattr(x, 'dtype', '')}. Convert uint8 with x.float() / 127.5 - 1.")
        if x.dim() not in (4, 5) or x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"Expected images (b, {cfg.in_channels}, H, W) or videos (b, {cfg.in_channels}, t, H, W), "
                f"got shape {tuple(x.shape)}. Videos in vdlearn are channels-first: (B, C, T, H, W)."
            )
        h, w = x.shape[-2:]
        f = cfg.downsample_factor
        if cfg.resolution is not None and (h, w) != (cfg.resolution, cfg.resolution):
            raise ValueError(
                f"The {cfg.name!r} autoencoder expects {cfg.resolution}x{cfg.resolution} frames, got {h}x{w}. "
                f"Resize the frames, or use a preset built for this size (e.g. 'toy64' for 64x64)."
            )
        if h % f or w % f:
            raise ValueError(f"Frame size {h}x{w} must be a multiple of the downsampling factor {f}.")
        if x.numel() and x.detach().abs().max() > 1.5:
            raise ValueError(
                f"Pixel values reach {x.detach().abs().max().item():.1f}; vdlearn frames are in [-1, 1]. "
                f"Convert [0, 1] images with 2 * x - 1, uint8 with x / 127.5 - 1."
            )

    def _check_latents(self, z: torch.Tensor) -> None:
        zc = self.config.z_channels
        if z.dim() not in (4, 5) or z.shape[1] != zc:
            raise ValueError(
                f"Expected latents (b, {zc}, h, w) or (b, {zc}, t, h, w), got shape {tuple(z.shape)}."
            )

    # ----------------------------------------------------------------- encode / decode
    def encode(self, x: torch.Tensor, *, frame_chunk: int | None = None) -> DiagonalGaussian:
        """Frames -> the posterior over latents (unscaled).

        ``x``: ``(b, 3, t, H, W)`` or ``(b, 3, H, W)`` in [-1, 1]. Returns a
        :class:`DiagonalGaussian` whose mean is ``(b, z, t, H/f, W/f)`` (or ``(b, z, H/f, W/f)``).
        ``frame_chunk`` encodes that many frames at a time (saves memory, same result).
        """
        self._check_pixels(x)
        video = x.dim() == 5
        frames = frames_to_batch(x) if video else x  # (b*t, 3, H, W)
        chunks = frames.split(frame_chunk) if frame_chunk else (frames,)
        moments = torch.cat([self.quant_conv(self.encoder(c)) for c in chunks])  # (b*t, 2z, h, w)
        if video:
            moments = batch_to_frames(moments, x.shape[2])  # (b, 2z, t, h, w)
        return DiagonalGaussian(moments, deterministic=not self.config.double_z)

    def decode(self, z: torch.Tensor, *, frame_chunk: int | None = None) -> torch.Tensor:
        """Latents (unscaled) -> frames. ``(b, z, t, h, w) -> (b, 3, t, h*f, w*f)``; 4-D works too.

        The per-frame decoder may split the frames into chunks of ``frame_chunk``;
        a temporal decoder splits by whole clips instead (it looks across frames).
        """
        self._check_latents(z)
        video = z.dim() == 5
        t = z.shape[2] if video else 1
        frames = frames_to_batch(z) if video else z  # (b*t, z, h, w)
        frames = self.post_quant_conv(frames)
        if self.is_temporal:
            per_chunk = max(1, (frame_chunk or frames.shape[0]) // t) * t  # whole clips only
            out = torch.cat([self.decoder(c, num_frames=t) for c in frames.split(per_chunk)])
        else:
            chunks = frames.split(frame_chunk) if frame_chunk else (frames,)
            out = torch.cat([self.decoder(c) for c in chunks])  # (b*t, 3, H, W)
        return batch_to_frames(out, t) if video else out

    def forward(
        self, x: torch.Tensor, *, sample: bool = True, generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None, latent_offset: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, DiagonalGaussian]:
        r"""Reconstruct ``x``: returns ``(reconstruction, posterior)`` (training uses both).

        ``sample=True`` decodes a sample $z = \mu + \sigma\epsilon$, with $\epsilon$ = ``noise``
        (shaped like the latents) or drawn from ``generator``; ``sample=False`` decodes the mean.
        ``latent_offset`` (latent shape, *scaled* units) is added to $z$ before decoding: the
        temporal decoder's fine-tuning perturbs the latents so (VideoGen, arXiv 2309.00398).
        """
        posterior = self.encode(x)
        if not sample:
            z = posterior.mode()  # (b, z, [t,] h, w)
        elif noise is not None:
            z = posterior.mean + posterior.std * noise.to(posterior.mean)
        else:
            z = posterior.sample(generator)
        if latent_offset is not None:
            z = z + latent_offset.to(z) / self.config.scale_factor
        return self.decode(z), posterior

    def encode_latents(
        self,
        x: torch.Tensor,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
        frame_chunk: int | None = None,
    ) -> torch.Tensor:
        """Frames -> the *scaled* latents a diffusion model works on: ``scale_factor * z``.

        ``sample=False`` uses the posterior mean; LDM and VideoCrafter's training draw a
        sample (``sample=True``); with the small KL weight the two differ very little.
        """
        posterior = self.encode(x, frame_chunk=frame_chunk)
        z = posterior.sample(generator) if sample else posterior.mode()
        return z * self.config.scale_factor

    def decode_latents(self, latents: torch.Tensor, *, frame_chunk: int | None = None) -> torch.Tensor:
        """Scaled latents (a diffusion model's output) -> frames: ``decode(latents / scale_factor)``.

        The output is not clamped; clamp to [-1, 1] for display.
        """
        return self.decode(latents / self.config.scale_factor, frame_chunk=frame_chunk)

    # ----------------------------------------------------------------- files
    def save(
        self,
        path: str | Path,
        *,
        metrics: Mapping[str, Any] | None = None,
        command: str | None = None,
        **extra: Any,
    ) -> Path:
        """Write ``path.safetensors`` and its json sidecar (config, metrics, commit, command)."""
        meta = artifact_meta(
            config=self.config.to_dict(), metrics=metrics, command=command, kind=CHECKPOINT_KIND, **extra
        )
        return save_checkpoint(path, self.state_dict(), meta)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> AutoencoderKL:
        """Load a checkpoint written by :meth:`save` (the config comes from its json sidecar)."""
        state, meta = load_checkpoint(path, device="cpu")
        if meta.get("kind") != CHECKPOINT_KIND or "config" not in meta:
            raise CheckpointMismatchError(
                f"{path} is not a vdlearn VAE checkpoint (its json sidecar has kind={meta.get('kind')!r}, "
                f"expected {CHECKPOINT_KIND!r}). For official weights use vdlearn.pretrained.vae_layouts "
                f"(load_ldm_vae / load_diffusers_vae)."
            )
        vae = cls(VAEConfig.from_dict(meta["config"]))
        load_state_dict_checked(vae, state, f"VAE checkpoint {path}")
        vae.meta = meta  # metrics and provenance, for display
        return vae.to(get_device(device)).eval()


def shipped_vae_path(name: str = "toy32", temporal: bool = False) -> Path:
    """Where the shipped toy autoencoder lives: ``data/vae/<name>[_temporal].safetensors``."""
    return data_dir() / "vae" / f"{name}{'_temporal' if temporal else ''}.safetensors"


def load_toy_vae(name: str = "toy32", *, temporal: bool = False, device: str | torch.device = "cpu") -> AutoencoderKL:
    """The trained toy autoencoder shipped in ``data/vae/`` (``temporal=True``: with the video decoder)."""
    path = shipped_vae_path(name, temporal)
    if not path.exists():
        how = (f"vdlearn train vae --temporal-decoder --vae {shipped_vae_path(name)} --out runs/vae_temporal"
               if temporal else f"vdlearn train vae --preset {name} --out runs/vae")
        raise FileNotFoundError(
            f"No shipped VAE at {path}. Train one with: {how} (see vdlearn/training/vae.py), "
            f"or set $VDLEARN_DATA to the folder holding vae/."
        )
    return AutoencoderKL.load(path, device=device)


__all__ = ["CHECKPOINT_KIND", "AutoencoderKL", "load_toy_vae", "shipped_vae_path"]
