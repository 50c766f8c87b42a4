"""Reduced-width stand-ins for the official VideoCrafter checkpoints, for the loader and pipeline tests.

The full-size files are gigabytes and never touched by the tests. These helpers build the
*same layouts* at a reduced width: every vdlearn module of a checkpoint with seeded random
weights (so no output is trivially zero), the pipeline made of them, and the official
state dict those modules would be published as (every official name, the unused CLIP
heads included, and the schedule buffers), ready to be saved in any official wrapping.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from vdlearn.diffusion import NoiseSchedule
from vdlearn.models.clip import OpenCLIPImageEncoder, OpenCLIPTextEncoder
from vdlearn.models.resampler import Resampler
from vdlearn.models.unet import VideoUNet
from vdlearn.models.vae import AutoencoderKL
from vdlearn.pipelines.videocrafter import VideoCrafterPipeline
from vdlearn.pretrained import checkpoints, openclip, vae_layouts, videocrafter
from vdlearn.pretrained.registry import PRETRAINED, PretrainedSpec

#: Reduced widths, every structural flag of the official configs kept (8 GroupNorm groups instead of 32).
UNET_REDUCED = {"model_channels": 16, "head_channels": 8, "context_dim": 64, "norm_groups": 8,
                "init_attention_heads": 2}
VAE_REDUCED = {"base_channels": 16, "norm_groups": 8}
TEXT_REDUCED = {"width": 64, "layers": 3, "heads": 2, "mlp_width": 256, "projection_dim": 32}
IMAGE_REDUCED = {"width": 48, "layers": 2, "heads": 2, "mlp_width": 96, "projection_dim": 32}
RESAMPLER_REDUCED = {"dim": 64, "depth": 2, "dim_head": 16, "heads": 2, "embedding_dim": 48, "output_dim": 64}
#: A small video: 64 x 64 pixels (8 x 8 latents), 4 frames, 2 DDIM steps.
SMALL = {"height": 64, "width": 64, "num_frames": 4, "num_inference_steps": 2}


def reduced_spec(name: str) -> PretrainedSpec:
    """The registry's spec for ``name`` with every module at a reduced width (same file, same sampler)."""
    spec = PRETRAINED[name].replace(unet_overrides=UNET_REDUCED, vae_overrides=VAE_REDUCED,
                                    text_encoder="openclip_reduced", text_overrides=TEXT_REDUCED)
    if spec.is_i2v:
        spec = spec.replace(image_encoder="openclip_reduced", image_overrides=IMAGE_REDUCED,
                            resampler="reduced", resampler_overrides=RESAMPLER_REDUCED)
    return spec


def seeded_value(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """A lively random tensor: weights with variance 1/fan_in, norm gains near 1, small biases."""
    r = torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1
    if len(shape) >= 2:
        return (r * (3 / (r.numel() // shape[0])) ** 0.5).float()
    return (1 + 0.2 * r if name.endswith("weight") else 0.1 * r).float()


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Overwrite every parameter of ``module`` with :func:`seeded_value` (zero-initialised outputs come alive)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(seeded_value(name, tuple(p.shape), g))
    return module.eval()


@functools.cache
def reduced_modules(name: str) -> dict[str, nn.Module]:
    """The seeded reduced modules of ``name`` (cached: do not change them; :func:`reduced_pipeline` copies)."""
    spec = reduced_spec(name)
    mods = {
        "unet": randomize(VideoUNet(checkpoints.unet_config(spec)), 1),
        "vae": randomize(AutoencoderKL(checkpoints.vae_config(spec)), 2),
        "text_encoder": randomize(OpenCLIPTextEncoder(checkpoints.text_config(spec)), 3),
    }
    if spec.is_i2v:
        mods["image_encoder"] = randomize(OpenCLIPImageEncoder(checkpoints.image_config(spec)), 4)
        mods["image_resampler"] = randomize(Resampler(checkpoints.resampler_config(spec)), 5)
    return mods


def reduced_pipeline(name: str) -> VideoCrafterPipeline:
    """The in-memory pipeline of the reduced checkpoint ``name`` (fresh copies of the cached modules)."""
    spec = reduced_spec(name)
    mods = {k: _copy(m) for k, m in reduced_modules(name).items()}
    pipe = VideoCrafterPipeline(**mods, schedule=NoiseSchedule(spec.schedule), defaults=spec.sampling,
                                name=spec.title)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _copy(module: nn.Module) -> nn.Module:
    clone = type(module)(module.config)
    clone.load_state_dict(module.state_dict())
    return clone.eval()


def official_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The reduced modules of ``name`` under their official names, as a whole official checkpoint."""
    spec = reduced_spec(name)
    mods = reduced_modules(name)
    state = dict(NoiseSchedule(spec.schedule).videocrafter_buffers())  # betas ... scale_arr, top level
    state |= {videocrafter.UNET_PREFIX + k: v for k, v in videocrafter.to_official(mods["unet"]).items()}
    state |= vae_layouts.vdlearn_to_ldm(mods["vae"].state_dict(), mods["vae"].config, prefix=vae_layouts.LDM_PREFIX)
    state |= openclip.to_official(mods["text_encoder"])
    g = torch.Generator().manual_seed(6)
    unused = {openclip.TEXT_PREFIX + k: s for k, s in openclip.text_unused_shapes(mods["text_encoder"].config).items()}
    if spec.is_i2v:
        state |= openclip.to_official(mods["image_encoder"]) | openclip.to_official(mods["image_resampler"])
        unused |= {openclip.IMAGE_PREFIX + k: s for k, s in openclip.image_unused_shapes(
            mods["image_encoder"].config, mods["text_encoder"].config).items()}
    state |= {k: seeded_value(k, tuple(s), g) for k, s in unused.items()}  # CLIP heads the video model never uses
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def wrap(state: dict[str, torch.Tensor], wrapping: str) -> dict:
    """``state`` in one of the layouts official files come in (``funcs.load_model_checkpoint``)."""
    if wrapping == "raw":
        return state
    if wrapping == "state_dict":
        return {"state_dict": state, "epoch": 3, "global_step": 1000}
    if wrapping == "module":  # DeepSpeed: every key prefixed with _forward_module.
        return {"module": {"_forward_module." + k: v for k, v in state.items()}}
    raise ValueError(wrapping)
