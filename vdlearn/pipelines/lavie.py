r"""LaVie's cascade: base text-to-video, temporal interpolation, video super-resolution, called like diffusers.

LaVie (Wang et al. 2023, arXiv 2309.15103, sec. 3) generates a video in three stages, each a
latent diffusion model of its own (Vchitect/LaVie @ ``6ce851e``):

===============  ==============================================  ===========================================
stage            what it does (official script)                  the pieces (vdlearn)
===============  ==============================================  ===========================================
base (3.1)       text -> 16 frames 320 x 512                     SD 1.4 CLIP ViT-L/14 text, U-Net ``lavie_base``,
                 (``base/pipelines/sample.py`` +                 SD VAE (0.18215), sampler ``lavie_base``
                 ``pipeline_videogen.py``)                       (diffusers DDPM, 980 .. 0), CFG 7.5
interpolation    16 -> 61 frames, same size                      the same text encoder and VAE, U-Net
(3.2)            (``interpolation/sample.py``)                   ``lavie_interpolation`` (8 input channels),
                                                                 sampler ``lavie_interpolation`` (guided-diffusion
                                                                 spaced DDIM, eta 0), CFG 4
VSR (3.3)        x4 in space: 320 x 512 -> 1280 x 2048           the SD x4 upscaler's OpenCLIP-H text, U-Net
                 (``vsr/sample.py`` +                            ``lavie_vsr`` (7 input channels, noise level),
                 ``pipeline_stable_diffusion_upscale_video_3d``)  x4 VAE (0.08333), sampler ``lavie_vsr``
                                                                 (DDIM 981 .. 1, v-prediction), CFG 5
===============  ==============================================  ===========================================

What each stage does, in the order of the official code:

**Base** (:class:`LaVieBasePipeline`): the prompt's CLIP ``last_hidden_state`` ``(b, 77, 768)``;
the unconditional input is the negative prompt, ``""`` when none is given (``_encode_prompt``:
``uncond_tokens = [""]``); ``x_T (b, 4, T, H/8, W/8)`` drawn first; 50 DDPM steps, each one
U-Net call on the batch ``[uncond; cond]`` and ``e = e_u + w (e_c - e_u)``; a fresh noise draw at
every step but the last (diffusers draws only for ``t > 0``); ``z / 0.18215`` decoded per frame.

**Interpolation** (:class:`LaVieInterpolationPipeline`): the base video of ``T`` frames is read as
``4T - 3`` frames (``np.linspace(0, T - 1, 4T - 3, dtype=int)``: 61 for 16), VAE-encoded with a
posterior *sample* times 0.18215, frames ``0, 4, .., 4T - 4`` (the input frames ``0 .. T-1``) kept,
each repeated 4 times and ``[1:-2]`` cut: the conditioning latent follows the index map
:func:`interpolation_frame_map` ``[0, 0, 0, 1, 1, 1, 1, .., T-1, T-1]`` and is concatenated to the
noisy latent (8 channels). The prompt gets ``", 4k."`` appended (``additional_prompt``), the
unconditional prompt is the literal string ``"None"`` (``negative_prompt: "None"``: the word the
model saw when its caption was dropped in training); CFG on ``[cond; uncond]``; DDIM with eta 0 over
guided-diffusion's spaced timesteps 999, 979, .., 20, 0. The official script reseeds before drawing
``x_T``; here the posterior noise and ``x_T`` come one after the other from one ``generator``.

**VSR** (:class:`LaVieVSRPipeline`): the low-resolution video in [-1, 1] is cut into chunks of 8
frames (``short_seq = 8`` in ``vsr/sample.py``; the temporal layers see one chunk), and each chunk is
a full sampling run with the one shared generator: the chunk is noise-augmented to ``noise_level``
50 by the x4 upscaler's low-res DDPM schedule (noise drawn first), then ``x_T (b, 4, t, h, w)`` at
the *low* resolution (the x4 VAE is KL-f4: its latents have the low-res size), then 50 DDIM steps
(eta 0, v-prediction) with the 7-channel input ``[x_t, low-res]``, the noise level as a class
label, CFG 5 on ``[uncond; cond]`` with the negative prompt ``"blur, worst quality"``; the latents
``z / 0.08333`` are decoded 4 frames at a time (``short_seq = 4`` in the pipeline) by the x4 VAE
(in float32 in the official code: "it overflows in float16").

**Cascade** (:class:`LaVieCascade`): the stages in order, each fed the previous stage's decoded
frames in [-1, 1] (the official scripts hand over mp4 files, i.e. 8-bit frames; note that the
official configs point the VSR script at the *base* videos: ``stages=("base", "vsr")`` does that).

Usage (weights loaded from local files by :func:`vdlearn.pretrained.lavie_pipeline.load_lavie_pipeline`)::

    pipe = load_lavie_pipeline("pretrained_models", dtype=torch.float16).to("cuda")
    out = pipe("a panda taking a selfie, 2k, high quality", generator=torch.Generator("cuda").manual_seed(400))
    out.frames[0]                        # (61, 1280, 2048, 3) in [0, 1]
    pipe(prompt, stages=("base",))       # stop after any stage

Memory savers (shared with :class:`~vdlearn.pipelines.videocrafter.VideoCrafterPipeline`, see
:mod:`vdlearn.pipelines.memory`): model / sequential CPU offload, attention slicing, and the VAE
decoding a few frames at a time (``decode_chunk_size``); each gives the same video. The VSR
stage's ``frame_chunk`` (8) is *not* a saver: it is the official procedure and changes the output.
Mixed precision: the U-Nets' GroupNorms compute in float32 (the official ones run in the weights'
dtype), the latents are kept in float32 between steps.

Taught in notebook 10_pretrained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from vdlearn.diffusion import NoiseSchedule, Sampler, SamplerConfig, combine_guidance
from vdlearn.diffusion.process import q_sample
from vdlearn.io import InputError
from vdlearn.pipelines import memory
from vdlearn.pipelines.video_io import OUTPUT_TYPES, postprocess_video
from vdlearn.pipelines.videocrafter import (
    VideoCrafterPipeline,
    VideoPipelineOutput,
    _initial_latents,
    _randn,
)

STAGES = ("base", "interpolation", "vsr")


@dataclass(frozen=True)
class LaVieStageDefaults:
    """What a stage's call uses when an argument is left out: the official script's settings."""

    sampler: str  # SamplerConfig preset
    guidance_scale: float  # classifier-free guidance weight w
    negative_prompt: str  # the unconditional prompt
    num_inference_steps: int = 50
    height: int | None = None  # pixels of the output (None: from the input video)
    width: int | None = None
    num_frames: int | None = None  # frames of the output (None: from the input video)
    prompt_suffix: str = ""  # appended to every prompt (interpolation: ", 4k.")
    noise_level: int = 0  # VSR: the low-res input's noise augmentation step
    frame_chunk: int | None = None  # VSR: frames per sampling run (official 8)
    decode_chunk: int | None = None  # frames per VAE decoder call (VSR official 4; None: all)


#: The official settings of each stage (base/configs/sample.yaml, interpolation/configs/sample.yaml,
#: vsr/configs/sample.yaml and vsr/sample.py).
STAGE_DEFAULTS: dict[str, LaVieStageDefaults] = {
    "base": LaVieStageDefaults(sampler="lavie_base", guidance_scale=7.5, negative_prompt="", height=320,
                               width=512, num_frames=16),
    "interpolation": LaVieStageDefaults(sampler="lavie_interpolation", guidance_scale=4.0,
                                        negative_prompt="None", prompt_suffix=", 4k."),
    "vsr": LaVieStageDefaults(sampler="lavie_vsr", guidance_scale=5.0, negative_prompt="blur, worst quality",
                              noise_level=50, frame_chunk=8, decode_chunk=4),
}


def interpolation_frame_map(input_frames: int) -> torch.Tensor:
    """Which input frame conditions each of the ``4T - 3`` output frames: ``(4T - 3,)`` long.

    ``interpolation/sample.py`` (``auto_inpainting_copy_no_mask``): frames ``0, 4, .., 4T - 4`` of the
    ``4T - 3``-frame read are the input frames; ``repeat_interleave(4)`` then ``[1:-2]``. For 16 frames:
    ``[0, 0, 0, 1, 1, 1, 1, 2, .., 14, 14, 14, 14, 15, 15]`` (61 entries).
    """
    if input_frames < 2:
        raise InputError(f"Interpolation needs a video of at least 2 frames, got {input_frames}.")
    return torch.arange(input_frames).repeat_interleave(4)[1:-2]  # (4T - 3,)


def interpolation_read_indices(input_frames: int) -> np.ndarray:
    """The official read of a ``T``-frame video as ``4T - 3`` frames: ``np.linspace(0, T-1, 4T-3, dtype=int)``."""
    return np.linspace(0, input_frames - 1, 4 * input_frames - 3, dtype=int)


def as_video_tensor(video: Any, what: str = "video") -> torch.Tensor:
    """A video given as vdlearn's tensor ``(b, 3, T, H, W)`` in [-1, 1] or as ``output.frames`` (numpy
    ``(b, T, H, W, 3)`` or ``(T, H, W, 3)`` in [0, 1]) -> ``(b, 3, T, H, W)`` float32 in [-1, 1]."""
    if isinstance(video, torch.Tensor):
        x = video.detach().float()
        if x.ndim != 5 or x.shape[1] != 3 or x.abs().max() > 1 + 1e-3:
            raise InputError(f"{what} as a tensor must be (b, 3, frames, H, W) in [-1, 1] (vdlearn's layout), "
                             f"got shape {tuple(x.shape)} with values up to {x.abs().max().item():.3g}. "
                             f"Pass a previous stage's output.frames (output_type='np') or such a tensor.")
        return x
    if isinstance(video, np.ndarray):
        a = video[None] if video.ndim == 4 else video
        if a.ndim != 5 or a.shape[-1] != 3:
            raise InputError(f"{what} as an array must be output.frames: (b, frames, H, W, 3) or (frames, H, W, 3) "
                             f"in [0, 1], got shape {video.shape}.")
        a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
        return torch.from_numpy(a).permute(0, 4, 1, 2, 3) * 2 - 1  # (b, 3, T, H, W) in [-1, 1]
    raise InputError(f"{what} must be a tensor (b, 3, frames, H, W) in [-1, 1] or output.frames as a numpy "
                     f"array, got {type(video).__name__}.")


def _resize_frames(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(b, 3, T, h, w) -> (b, 3, T, height, width)``, bilinear (the interpolation script's ``ResizeVideo``)."""
    b, c, t, h, w = video.shape
    if (h, w) == (height, width):
        return video
    frames = video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # (b*T, 3, h, w)
    frames = F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False)
    return frames.reshape(b, t, c, height, width).permute(0, 2, 1, 3, 4)  # (b, 3, T, H, W)


class _LaVieStage(VideoCrafterPipeline):
    """What the three stages share: components, device and dtype, the memory savers, text, CFG, decoding.

    The component handling (``to``, the offloads, attention slicing, prompt encoding) is the
    VideoCrafter pipeline's; the stages differ in their conditioning and sampler.
    """

    stage = ""

    def __init__(self, unet: nn.Module, vae: nn.Module, text_encoder: nn.Module, schedule: NoiseSchedule,
                 sampler: SamplerConfig | str | None = None, defaults: LaVieStageDefaults | None = None,
                 name: str | None = None):
        super().__init__(unet, vae, text_encoder, schedule, name=name or f"LaVie {self.stage}")
        self.stage_defaults = defaults or STAGE_DEFAULTS[self.stage]
        sampler = sampler or self.stage_defaults.sampler
        self.sampler_config = SamplerConfig.preset(sampler) if isinstance(sampler, str) else sampler
        self.vae_decode_chunk = self.stage_defaults.decode_chunk

    # ------------------------------------------------------------------------- shared steps
    def _settings(self, num_inference_steps, guidance_scale, output_type) -> tuple[int, float]:
        d = self.stage_defaults
        steps = d.num_inference_steps if num_inference_steps is None else int(num_inference_steps)
        scale = d.guidance_scale if guidance_scale is None else float(guidance_scale)
        if steps < 1:
            raise InputError(f"num_inference_steps must be a positive number of steps, got {num_inference_steps}.")
        if output_type not in OUTPUT_TYPES:
            raise InputError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        return steps, scale

    def _sampler(self, steps: int, guidance_scale: float) -> Sampler:
        try:
            return Sampler(self.schedule, self.sampler_config, num_steps=steps, guidance_scale=guidance_scale)
        except ValueError as err:
            raise InputError(f"num_inference_steps={steps} does not fit {self.name}'s sampler: {err}") from None

    def _conditioning(self, prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, do_guidance: bool,
                      per_prompt: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``cond (b, 77, d)`` and the unconditional ``(b, 77, d)`` (None without guidance)."""
        suffix = self.stage_defaults.prompt_suffix
        if prompt is not None and suffix:
            prompt = [p + suffix for p in ([prompt] if isinstance(prompt, str) else list(prompt))]
        cond = self._text_embeddings(prompt, prompt_embeds, "prompt")  # (b', 77, d)
        n = cond.shape[0]
        cond = cond.repeat_interleave(per_prompt, dim=0)  # (b, 77, d)
        if not do_guidance:
            return cond, None
        if negative_prompt is None and negative_prompt_embeds is None:
            negative_prompt = self.stage_defaults.negative_prompt
        if isinstance(negative_prompt, str):
            negative_prompt = [negative_prompt]
        uncond = self._text_embeddings(negative_prompt, negative_prompt_embeds, "negative_prompt")
        uncond = self._match_batch(uncond, n, "negative prompts").repeat_interleave(per_prompt, dim=0)
        return cond, uncond

    def _predict(self, unet, x, t, cond, uncond, scale, uncond_first: bool, **extra) -> torch.Tensor:
        """The (guided) U-Net output at ``x (b, c, T, h, w)``: one call on the batch ``[uncond; cond]`` (or
        ``[cond; uncond]``, as the official stage orders it), ``e_u + w (e_c - e_u)``."""
        b = x.shape[0]
        tt = torch.full((b,), t, device=x.device, dtype=torch.long)  # (b,)
        xin = x.to(self.dtype)
        if uncond is None:
            return unet(xin, tt, cond, **extra).float()
        pair = [uncond, cond] if uncond_first else [cond, uncond]
        both = {k: torch.cat([v, v]) if isinstance(v, torch.Tensor) else v for k, v in extra.items()}
        out = unet(torch.cat([xin, xin]), torch.cat([tt, tt]), torch.cat(pair), **both).float()  # (2b, c, T, h, w)
        first, second = out.chunk(2)
        e_uncond, e_cond = (first, second) if uncond_first else (second, first)
        return combine_guidance(e_cond, e_uncond, scale)

    def _run_sampler(self, sampler: Sampler, latents, generator, cond, uncond, scale, uncond_first, **extra):
        """Walk the sampler's ladder from ``latents = x_T``; fresh noise only where the step adds some."""
        unet = self._use("unet")
        device = latents.device
        cond = cond.to(device)
        uncond = uncond.to(device) if uncond is not None else None
        c = sampler.config
        for i in tqdm(range(len(sampler)), **{"desc": self.name, "leave": False, **self._progress}):
            t = int(sampler.timesteps[i])
            out = self._predict(unet, latents, t, cond, uncond, scale, uncond_first, **extra)
            noisy = (c.method == "ddpm" and int(sampler.prev_timesteps[i]) >= 0) or (c.method == "ddim" and c.eta > 0)
            noise = _randn(latents.shape, generator, device) if noisy else None  # diffusers: drawn only if used
            latents = sampler.step(out, latents, i, noise=noise).prev_sample.float()
        return latents

    def _decode(self, latents: torch.Tensor, decode_chunk_size: int | None) -> torch.Tensor:
        """``(b, 4, T, h, w)`` latents -> ``(b, 3, T, H, W)`` frames in [-1, 1] (clamped), a few frames per call."""
        vae = self._use("vae")
        chunk = decode_chunk_size if decode_chunk_size is not None else self.vae_decode_chunk
        if chunk is not None and chunk < 1:
            raise InputError(f"decode_chunk_size must be a positive number of frames, got {chunk}.")
        dtype = next(vae.parameters()).dtype
        return vae.decode_latents(latents.to(dtype), frame_chunk=chunk).float().clamp(-1, 1)

    def _finish(self, result: torch.Tensor, output_type: str, return_dict: bool):
        if self._offload is not None:
            self._offload.offload_all()
        frames = result if output_type == "latent" else postprocess_video(result, output_type)
        return VideoPipelineOutput(frames=frames) if return_dict else (frames,)

    @property
    def size_multiple(self) -> int:
        """Output height and width must be multiples of this: the VAE's factor times the U-Net's halvings
        (64 for the base and interpolation models: 8 x 2^3; 32 for VSR: the x4 VAE's 4 x 2^3)."""
        return self.vae.downsample_factor * 2 ** (len(self.unet.config.channel_mult) - 1)

    def _check_size(self, height: int, width: int, why: str) -> None:
        m = self.size_multiple
        if height <= 0 or width <= 0 or height % m or width % m:
            raise InputError(f"height and width must be positive multiples of {m} ({why}); got {height}x{width}.")

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}={type(m).__name__}" for n, m in self.components.items())
        return f"{type(self).__name__}({self.name}: {parts}, sampler={self.sampler_config.method})"


class LaVieBasePipeline(_LaVieStage):
    """LaVie's base text-to-video stage (sec. 3.1): 16 frames at 320 x 512 from a prompt."""

    stage = "base"

    @torch.no_grad()
    def __call__(self, prompt: str | Sequence[str] | None = None, negative_prompt: str | Sequence[str] | None = None,
                 height: int | None = None, width: int | None = None, num_frames: int | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 generator: torch.Generator | None = None, latents: torch.Tensor | None = None,
                 num_videos_per_prompt: int = 1, prompt_embeds: torch.Tensor | None = None,
                 negative_prompt_embeds: torch.Tensor | None = None, decode_chunk_size: int | None = None,
                 output_type: str = "np", return_dict: bool = True):
        """Generate videos; returns :class:`~vdlearn.pipelines.videocrafter.VideoPipelineOutput` (``.frames``).

        Args:
            prompt: one prompt or a list (or ``prompt_embeds`` ``(b, 77, 768)``).
            negative_prompt: the unconditional prompt(s); default ``""`` as ``pipeline_videogen.py``.
            height, width: multiples of 64 (default 320 x 512); num_frames: default 16.
            num_inference_steps, guidance_scale: DDPM steps (50) and CFG weight (7.5; 1 = no guidance).
            generator: the source of all noise; latents: ``x_T (b, 4, T, H/8, W/8)`` instead of a draw.
            decode_chunk_size: frames per VAE decoder call (default: all).
            output_type: ``"np"``, ``"pt"``, ``"pil"`` or ``"latent"``.
        """
        video = self._generate(prompt, negative_prompt, height, width, num_frames, num_inference_steps,
                               guidance_scale, generator, latents, num_videos_per_prompt, prompt_embeds,
                               negative_prompt_embeds, decode_chunk_size, output_type)
        return self._finish(video, output_type, return_dict)

    def _generate(self, prompt, negative_prompt, height, width, num_frames, num_inference_steps, guidance_scale,
                  generator, latents, num_videos_per_prompt, prompt_embeds, negative_prompt_embeds,
                  decode_chunk_size, output_type) -> torch.Tensor:
        d = self.stage_defaults
        height, width = height or d.height, width or d.width
        num_frames = num_frames or d.num_frames
        steps, scale = self._settings(num_inference_steps, guidance_scale, output_type)
        self._check_size(height, width, "the latents, 1/8 of the size, go through 3 halvings in the U-Net; "
                                        "LaVie's size is 320x512")
        if num_frames < 1:
            raise InputError(f"num_frames must be a positive number of frames, got {num_frames}.")
        sampler = self._sampler(steps, scale)
        device = self.device
        # 1. text: the prompt's CLIP embedding; "" (or negative_prompt) as the unconditional input
        cond, uncond = self._conditioning(prompt, negative_prompt, prompt_embeds, negative_prompt_embeds,
                                          scale != 1.0, num_videos_per_prompt)  # (b, 77, 768) each
        # 2. x_T, drawn first
        f = self.vae.downsample_factor  # 8
        shape = (cond.shape[0], 4, num_frames, height // f, width // f)  # (b, 4, T, H/8, W/8)
        latents = _initial_latents(latents, shape, generator, device, "b, 4, frames, height/8, width/8")
        # 3. DDPM with CFG on [uncond; cond] (pipeline_videogen.py)
        latents = self._run_sampler(sampler, latents, generator, cond, uncond, scale, uncond_first=True)
        if output_type == "latent":
            return latents
        # 4. z / 0.18215 through the per-frame SD decoder
        return self._decode(latents, decode_chunk_size)  # (b, 3, T, H, W)


class LaVieInterpolationPipeline(_LaVieStage):
    """LaVie's temporal interpolation stage (sec. 3.2): a ``T``-frame video -> ``4T - 3`` frames (16 -> 61)."""

    stage = "interpolation"

    @torch.no_grad()
    def __call__(self, prompt: str | Sequence[str] | None = None, video: Any = None,
                 negative_prompt: str | Sequence[str] | None = None, height: int | None = None,
                 width: int | None = None, num_frames: int | None = None, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, generator: torch.Generator | None = None,
                 latents: torch.Tensor | None = None, prompt_embeds: torch.Tensor | None = None,
                 negative_prompt_embeds: torch.Tensor | None = None, decode_chunk_size: int | None = None,
                 output_type: str = "np", return_dict: bool = True):
        """Interpolate ``video``; returns :class:`~vdlearn.pipelines.videocrafter.VideoPipelineOutput` (``.frames``).

        Args:
            prompt: the video's prompt(s), one per video (``", 4k."`` is appended, as the official script).
            video: the base video: ``output.frames`` of the base stage (numpy ``(b, T, H, W, 3)`` in [0, 1])
                or a tensor ``(b, 3, T, H, W)`` in [-1, 1].
            negative_prompt: default ``"None"`` (the literal word, as the official config).
            height, width: the working size, multiples of 64 (default: the video's; otherwise it is resized).
            num_frames: must be ``4T - 3`` (61 for 16 input frames), the default.
            num_inference_steps, guidance_scale: spaced-DDIM steps (50) and CFG weight (4.0).
            generator: the source of all noise (the VAE posterior sample, then ``x_T``).
        """
        out = self._generate(prompt, video, negative_prompt, height, width, num_frames, num_inference_steps,
                             guidance_scale, generator, latents, prompt_embeds, negative_prompt_embeds,
                             decode_chunk_size, output_type)
        return self._finish(out, output_type, return_dict)

    def _generate(self, prompt, video, negative_prompt, height, width, num_frames, num_inference_steps,
                  guidance_scale, generator, latents, prompt_embeds, negative_prompt_embeds, decode_chunk_size,
                  output_type) -> torch.Tensor:
        if video is None:
            raise InputError("The interpolation stage needs video=...: the base stage's output.frames.")
        video = as_video_tensor(video)  # (b, 3, T, H, W) in [-1, 1]
        b, _, t_in, h_in, w_in = video.shape
        height, width = height or h_in, width or w_in
        expected = 4 * t_in - 3
        if num_frames is not None and num_frames != expected:
            raise InputError(f"num_frames must be {expected} for a video of {t_in} frames: LaVie's interpolation "
                             f"makes 4T - 3 frames (16 -> 61, three new frames between each pair); got "
                             f"num_frames={num_frames}.")
        steps, scale = self._settings(num_inference_steps, guidance_scale, output_type)
        self._check_size(height, width, "the latents, 1/8 of the size, go through 3 halvings in the U-Net; "
                                        "LaVie's size is 320x512")
        sampler = self._sampler(steps, scale)
        device = self.device
        # 1. text: prompt + ", 4k.", and "None" as the unconditional prompt
        cond, uncond = self._conditioning(prompt, negative_prompt, prompt_embeds, negative_prompt_embeds,
                                          scale != 1.0, 1)  # (b, 77, 768) each
        if cond.shape[0] != b:
            cond = self._match_batch(cond, b, "prompts")
            uncond = self._match_batch(uncond, b, "negative prompts") if uncond is not None else None
        # 2. the conditioning latent: the 4T-3-frame read, VAE posterior samples * 0.18215, the index map
        condition = self._condition_latent(_resize_frames(video, height, width).to(device), generator)
        # 3. x_T (b, 4, 4T-3, H/8, W/8)
        f = self.vae.downsample_factor  # 8
        shape = (b, 4, expected, height // f, width // f)  # (b, 4, 4T-3, H/8, W/8)
        latents = _initial_latents(latents, shape, generator, device, "b, 4, 4T-3, height/8, width/8")
        # 4. spaced DDIM (eta 0) with CFG on [cond; uncond] (forward_with_cfg), the condition concatenated
        latents = self._run_sampler(sampler, latents, generator, cond, uncond, scale, uncond_first=False,
                                    concat=condition.to(self.dtype))
        if output_type == "latent":
            return latents
        return self._decode(latents, decode_chunk_size)  # (b, 3, 4T-3, H, W)

    def _condition_latent(self, video: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``(b, 3, T, H, W)`` in [-1, 1] -> the conditioning latent ``(b, 4, 4T-3, H/8, W/8)``.

        The official script encodes all ``4T - 3`` frames it read (with repeats) and keeps frames
        ``0, 4, ..``, i.e. the ``T`` input frames; here the ``T`` frames are encoded once and the
        posterior noise is drawn in the official ``(b * (4T-3), 4, h, w)`` layout and taken at the same
        frames, so one generator state gives the official numbers.
        """
        vae = self._use("vae")
        b, _, t_in = video.shape[:3]
        read = torch.as_tensor(interpolation_read_indices(t_in))  # (4T-3,) frames of the input
        kept = read[::4]  # frames 0, 4, .. of the read: the input frames 0 .. T-1
        if not torch.equal(kept, torch.arange(t_in)):  # the official rule keeps every input frame exactly once
            raise RuntimeError(f"The 4T-3 read does not keep frames 0..{t_in - 1} at every 4th position: {kept}.")
        dtype = next(vae.parameters()).dtype
        posterior = vae.encode(video.to(dtype), frame_chunk=self.vae_decode_chunk)  # mean (b, 4, T, h, w)
        mean, std = posterior.mean.float(), posterior.std.float()
        h, w = mean.shape[-2:]
        noise = _randn((b * len(read), 4, h, w), generator, video.device)  # the official (b f) c h w draw
        noise = noise.reshape(b, len(read), 4, h, w)[:, ::4].permute(0, 2, 1, 3, 4)  # (b, 4, T, h, w)
        z = (mean + std * noise) * vae.config.scale_factor  # latent_dist.sample() * 0.18215
        return z[:, :, interpolation_frame_map(t_in).to(z.device)]  # (b, 4, 4T-3, h, w)


class LaVieVSRPipeline(_LaVieStage):
    """LaVie's video super-resolution stage (sec. 3.3): x4 in space, chunks of 8 frames, the x4 upscaler's VAE."""

    stage = "vsr"

    def __init__(self, unet: nn.Module, vae: nn.Module, text_encoder: nn.Module, schedule: NoiseSchedule,
                 low_res_schedule: NoiseSchedule, sampler: SamplerConfig | str | None = None,
                 defaults: LaVieStageDefaults | None = None, name: str | None = None):
        super().__init__(unet, vae, text_encoder, schedule, sampler, defaults, name)
        self.low_res_schedule = low_res_schedule  # the x4 upscaler's low_res_scheduler (noise augmentation)
        self.max_noise_level = int(getattr(unet.config, "max_noise_level", 350))

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> LaVieVSRPipeline:
        """Move (and cast) the components; the x4 VAE stays float32, as ``vsr/sample.py`` decodes in float32."""
        super().to(device, dtype)
        self.vae.float()
        return self

    @torch.no_grad()
    def __call__(self, prompt: str | Sequence[str] | None = None, video: Any = None,
                 negative_prompt: str | Sequence[str] | None = None, height: int | None = None,
                 width: int | None = None, num_frames: int | None = None, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, generator: torch.Generator | None = None,
                 noise_level: int | None = None, frame_chunk: int | None = None,
                 prompt_embeds: torch.Tensor | None = None, negative_prompt_embeds: torch.Tensor | None = None,
                 decode_chunk_size: int | None = None, output_type: str = "np", return_dict: bool = True):
        """Upscale ``video`` 4x; returns :class:`~vdlearn.pipelines.videocrafter.VideoPipelineOutput` (``.frames``).

        Args:
            prompt: the video's prompt(s).
            video: the low-resolution video (``output.frames`` of a previous stage, or ``(b, 3, T, h, w)``
                in [-1, 1]); ``h`` and ``w`` multiples of 8.
            negative_prompt: default ``"blur, worst quality"`` (``vsr/sample.py``).
            height, width: the output size, 4 x the input's (the default); other values resize the input
                to ``height/4 x width/4``.
            num_frames: must equal the input's frame count (the default).
            num_inference_steps, guidance_scale: DDIM steps (50) and CFG weight (5).
            noise_level: the low-res input's noise augmentation (50; 0 .. 350).
            frame_chunk: frames per sampling run (official 8; ``None`` or 0: all frames in one run).
            decode_chunk_size: frames per x4-VAE decoder call (official 4).
        """
        out = self._generate(prompt, video, negative_prompt, height, width, num_frames, num_inference_steps,
                             guidance_scale, generator, noise_level, frame_chunk, prompt_embeds,
                             negative_prompt_embeds, decode_chunk_size, output_type)
        return self._finish(out, output_type, return_dict)

    def _generate(self, prompt, video, negative_prompt, height, width, num_frames, num_inference_steps,
                  guidance_scale, generator, noise_level, frame_chunk, prompt_embeds, negative_prompt_embeds,
                  decode_chunk_size, output_type) -> torch.Tensor:
        d = self.stage_defaults
        if video is None:
            raise InputError("The VSR stage needs video=...: the low-resolution video to upscale.")
        video = as_video_tensor(video)  # (b, 3, T, h, w) in [-1, 1]
        b, _, t_in, h_in, w_in = video.shape
        height, width = height or 4 * h_in, width or 4 * w_in
        if num_frames is not None and num_frames != t_in:
            raise InputError(f"num_frames must equal the input video's {t_in} frames (VSR changes the size, not "
                             f"the frame count); got num_frames={num_frames}.")
        steps, scale = self._settings(num_inference_steps, guidance_scale, output_type)
        f = self.vae.downsample_factor  # 4: the x4 VAE's latents have the low-res size
        self._check_size(height, width, f"the output is {f}x the low-res input, whose size the latents keep "
                                        f"through the U-Net's halvings: the input must be a multiple of "
                                        f"{self.size_multiple // f}; got an input of {h_in}x{w_in}")
        noise_level = d.noise_level if noise_level is None else int(noise_level)
        if not 0 <= noise_level <= self.max_noise_level:
            raise InputError(f"noise_level must lie in 0..{self.max_noise_level} (the x4 upscaler's "
                             f"max_noise_level); got {noise_level}.")
        chunk = d.frame_chunk if frame_chunk is None else frame_chunk
        if chunk is not None and chunk < 0:
            raise InputError(f"frame_chunk must be a positive number of frames (or 0: all), got {frame_chunk}.")
        sampler = self._sampler(steps, scale)
        device = self.device
        low_res = _resize_frames(video, height // f, width // f).to(device)  # (b, 3, T, h, w)
        cond, uncond = self._conditioning(prompt, negative_prompt, prompt_embeds, negative_prompt_embeds,
                                          scale != 1.0, 1)  # (b, 77, 1024) each
        if cond.shape[0] != b:
            cond = self._match_batch(cond, b, "prompts")
            uncond = self._match_batch(uncond, b, "negative prompts") if uncond is not None else None
        # vsr/sample.py: chunks of 8 frames when the video is longer, each a whole run with the shared generator
        starts = range(0, t_in, chunk) if chunk and t_in > chunk else [0]
        size = chunk if chunk and t_in > chunk else t_in
        outs = [self._upscale(low_res[:, :, s:s + size], sampler, generator, cond, uncond, scale, noise_level,
                              decode_chunk_size, output_type) for s in starts]
        return torch.cat(outs, dim=2)  # (b, 3, T, 4h, 4w) or latents (b, 4, T, h, w)

    def _upscale(self, low_res, sampler, generator, cond, uncond, scale, noise_level, decode_chunk_size,
                 output_type) -> torch.Tensor:
        """One official pipeline call on ``low_res (b, 3, t, h, w)``."""
        device = low_res.device
        # 1. noise augmentation: q(x_s | x_lr) at s = noise_level under the low-res DDPM schedule, drawn first
        noise = _randn(low_res.shape, generator, device)
        level = torch.full((low_res.shape[0],), noise_level, device=device, dtype=torch.long)  # (b,)
        augmented = q_sample(self.low_res_schedule, low_res, level, noise=noise)  # (b, 3, t, h, w)
        # 2. x_T at the low-res size (the x4 VAE's latents have it)
        latents = _randn((low_res.shape[0], 4, *low_res.shape[2:]), generator, device)  # (b, 4, t, h, w)
        # 3. DDIM, v-prediction, CFG on [uncond; cond]; [x_t, low-res] in, the noise level as class label
        latents = self._run_sampler(sampler, latents, generator, cond, uncond, scale, uncond_first=True,
                                    concat=augmented.to(self.dtype), noise_level=level)
        if output_type == "latent":
            return latents
        # 4. z / 0.08333 through the x4 VAE, 4 frames per call
        return self._decode(latents, decode_chunk_size)  # (b, 3, t, 4h, 4w)


class _SharedOffload:
    """One stage's view of an offload shared by the cascade (the stages share the SD 1.4 text encoder and VAE)."""

    def __init__(self, shared: memory.ModelOffload | memory.SequentialOffload, names: Mapping[str, str]):
        self.shared, self.names = shared, dict(names)
        self.execution_device = shared.execution_device

    def use(self, name: str) -> None:
        self.shared.use(self.names[name])

    def offload_all(self) -> None:
        self.shared.offload_all()

    def remove(self) -> None:
        self.shared.remove()


class LaVieCascade:
    """The three LaVie stages in order (sec. 3): ``pipe(prompt)`` -> base -> interpolation -> VSR.

    Any stage may be missing (``None``); ``stages=`` picks which run, always in the order base,
    interpolation, VSR, each fed the previous stage's frames (a first stage other than base needs
    ``video=``). The arguments of the call go to every stage that runs, left-out ones take each
    stage's official default; ``stage_kwargs={"vsr": {"noise_level": 20}}`` passes stage-specific ones.
    """

    def __init__(self, base: LaVieBasePipeline | None = None, interpolation: LaVieInterpolationPipeline | None = None,
                 vsr: LaVieVSRPipeline | None = None):
        self.base, self.interpolation, self.vsr = base, interpolation, vsr
        if not self.stages:
            raise ValueError("A LaVie cascade needs at least one stage (base, interpolation or vsr).")

    @property
    def stages(self) -> dict[str, _LaVieStage]:
        """``{name: stage pipeline}`` of the stages present, in cascade order."""
        return {n: getattr(self, n) for n in STAGES if getattr(self, n) is not None}

    def _unique_components(self) -> tuple[dict[str, nn.Module], dict[str, dict[str, str]]]:
        modules, names, seen = {}, {}, {}
        for stage_name, stage in self.stages.items():
            names[stage_name] = {}
            for comp, module in stage.components.items():
                key = seen.get(id(module))
                if key is None:
                    key = seen[id(module)] = f"{stage_name}.{comp}"
                    modules[key] = module
                names[stage_name][comp] = key
        return modules, names

    def _set_offload(self, kind) -> None:
        self._remove_offload()
        modules, names = self._unique_components()
        shared = kind(modules)
        for stage_name, stage in self.stages.items():
            stage._offload = _SharedOffload(shared, names[stage_name])

    def enable_model_cpu_offload(self, device: str | torch.device = "auto", offload_device: str = "cpu") -> None:
        """Every component of every stage on ``offload_device``; one at a time on ``device`` while it works."""
        from vdlearn.device import get_device

        self._set_offload(lambda m: memory.ModelOffload(m, get_device(device), offload_device))

    def enable_sequential_cpu_offload(self, device: str | torch.device = "auto", offload_device: str = "cpu") -> None:
        """Layer by layer, across all stages (see :class:`~vdlearn.pipelines.memory.SequentialOffload`)."""
        from vdlearn.device import get_device

        self._set_offload(lambda m: memory.SequentialOffload(m, get_device(device), offload_device))

    def enable_attention_slicing(self, slice_size: int | str = "auto") -> None:
        for stage in self.stages.values():
            stage.enable_attention_slicing(slice_size)

    def disable_attention_slicing(self) -> None:
        for stage in self.stages.values():
            stage.disable_attention_slicing()

    def _remove_offload(self) -> None:
        removed = set()
        for stage in self.stages.values():
            if stage._offload is not None and id(stage._offload.shared) not in removed:
                stage._offload.remove()
                removed.add(id(stage._offload.shared))
            stage._offload = None

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> LaVieCascade:
        """Move (and cast) every stage; ends any offloading."""
        self._remove_offload()
        for stage in self.stages.values():
            stage.to(device, dtype)
        return self

    def set_progress_bar_config(self, **kwargs) -> None:
        for stage in self.stages.values():
            stage.set_progress_bar_config(**kwargs)

    @torch.no_grad()
    def __call__(self, prompt: str | Sequence[str] | None = None, negative_prompt: str | Sequence[str] | None = None,
                 height: int | None = None, width: int | None = None, num_frames: int | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 generator: torch.Generator | None = None, output_type: str = "np",
                 stages: Sequence[str] | None = None, video: Any = None,
                 stage_kwargs: Mapping[str, Mapping[str, Any]] | None = None, return_dict: bool = True):
        """Run ``stages`` (default: all present) in order; returns ``.frames`` of the last one.

        Args:
            prompt, negative_prompt, num_inference_steps, guidance_scale: for every stage (None: each stage's
                official value: negative prompts ``""`` / ``"None"`` / ``"blur, worst quality"``, CFG 7.5 / 4 / 5).
            height, width, num_frames: the base video's (320 x 512, 16); the later stages follow from it.
            generator: one generator, used by the stages one after the other.
            stages: e.g. ``("base",)``, ``("base", "interpolation")`` or ``("base", "vsr")``.
            video: the input of the first stage when it is not ``base``.
            stage_kwargs: extra keyword arguments per stage (``decode_chunk_size``, ``noise_level``, ...).
        """
        run = self._check_stages(stages, video)
        if output_type not in OUTPUT_TYPES:
            raise InputError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        stage_kwargs = dict(stage_kwargs or {})
        unknown = set(stage_kwargs) - set(STAGES)
        if unknown:
            raise InputError(f"stage_kwargs has keys {sorted(unknown)}; the stages are {STAGES}.")
        result = None if video is None else as_video_tensor(video)
        for i, name in enumerate(run):
            last = i == len(run) - 1
            common = {"negative_prompt": negative_prompt, "num_inference_steps": num_inference_steps,
                      "guidance_scale": guidance_scale, "generator": generator,
                      "output_type": output_type if last else "pt", **stage_kwargs.get(name, {})}
            if name == "base":
                common |= {"height": height, "width": width, "num_frames": num_frames}
            else:
                common |= {"video": result}
            stage = self.stages[name]
            out_type = common.pop("output_type")
            result = stage._generate(prompt, **_ordered(stage, common), output_type=out_type)
            if stage._offload is not None:
                stage._offload.offload_all()
        frames = result if output_type == "latent" else postprocess_video(result, output_type)
        return VideoPipelineOutput(frames=frames) if return_dict else (frames,)

    def _check_stages(self, stages: Sequence[str] | None, video: Any) -> list[str]:
        if stages is None:
            return list(self.stages)
        if isinstance(stages, str):
            stages = (stages,)
        bad = [s for s in stages if s not in STAGES]
        if bad:
            raise InputError(f"stages must name LaVie stages {STAGES}; got {list(stages)}.")
        missing = [s for s in stages if s not in self.stages]
        if missing:
            raise InputError(f"This cascade has no {', '.join(missing)} stage (it has {list(self.stages)}): load it "
                             f"with load_lavie_pipeline(..., {missing[0]}=...).")
        order = [s for s in STAGES if s in stages]
        if list(stages) != order or len(set(stages)) != len(stages):
            raise InputError(f"stages run in the order {STAGES}, each once; got {list(stages)}.")
        if order[0] != "base" and video is None:
            raise InputError(f"The cascade starts at the {order[0]} stage: pass video=... (its input).")
        return order

    def __repr__(self) -> str:
        return "LaVieCascade(" + ", ".join(f"{n}={s!r}" for n, s in self.stages.items()) + ")"


def _ordered(stage: _LaVieStage, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` completed with ``None`` for every other argument of ``stage._generate``."""
    import inspect

    params = [p for p in inspect.signature(stage._generate).parameters if p not in ("prompt", "output_type")]
    unknown = set(kwargs) - set(params)
    if unknown:
        raise InputError(f"The {stage.stage} stage takes no {sorted(unknown)}; its arguments: {params}.")
    defaults = {"num_videos_per_prompt": 1}
    return {p: kwargs.get(p, defaults.get(p)) for p in params}


__all__ = [
    "STAGES",
    "STAGE_DEFAULTS",
    "LaVieBasePipeline",
    "LaVieCascade",
    "LaVieInterpolationPipeline",
    "LaVieStageDefaults",
    "LaVieVSRPipeline",
    "as_video_tensor",
    "interpolation_frame_map",
    "interpolation_read_indices",
]
