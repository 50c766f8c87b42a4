"""VideoCrafter1/2 text-to-video and image-to-video, called the way diffusers pipelines are called.

The official code samples in ``scripts/evaluation/inference.py`` and ``funcs.py``
(``batch_ddim_sampling``) with ``lvdm/models/samplers/ddim.py`` (AILab-CVC/VideoCrafter
@ ``11bcd76``; VideoCrafter1 arXiv 2310.19512, VideoCrafter2 arXiv 2401.09047).
:meth:`VideoCrafterPipeline.__call__` does the same, in the same order:

1. **text**: the OpenCLIP ViT-H/14 embedding of each prompt ``(b, 77, 1024)``; the
   unconditional input is the embedding of the empty prompt ``""`` (``uncond_type: empty_seq``),
   or of ``negative_prompt`` if you give one;
2. **image** (I2V only): the image at ``(H, W)`` in [-1, 1], CLIP-preprocessed to 224 x 224,
   embedded ``(b, 257, 1280)`` and resampled to 16 tokens ``(b, 16, 1024)``, appended to the
   text: a context of 77 + 16 tokens. The unconditional image is a zero image
   ``(b, 3, 224, 224)`` through the same encoder and resampler;
3. **fps**: one frame rate per video, a ``LongTensor`` (28 in the T2V scripts, 8 for I2V);
4. **noise**: ``x_T (b, 4, T, H/8, W/8)`` drawn first from ``generator``;
5. **DDIM** over the uniform timesteps 981, 961, ..., 1 (for 50 steps) with ``eta`` (1.0
   officially), VideoCrafter's ``scale_arr`` where the schedule has it, classifier-free
   guidance as two U-Net calls (``e = e_u + w (e_c - e_u)``, ``w`` = 12), one fresh noise
   draw per step;
6. **decode**: ``z / 0.18215`` through the per-frame KL-f8 decoder;
7. **frames**: clamp to [-1, 1] and map to [0, 1] (:mod:`vdlearn.pipelines.video_io`).

Usage (the weights download once, 7.4 GB; see :func:`vdlearn.pretrained.load_pipeline`)::

    from vdlearn.pretrained import load_pipeline
    from vdlearn.pipelines.video_io import export_to_video

    pipe = load_pipeline("videocrafter2_t2v_512", dtype=torch.float16).to("cuda")
    frames = pipe("A tiger walks in the forest, photorealistic, 4k, high definition",
                  generator=torch.Generator("cuda").manual_seed(123)).frames[0]   # (16, 320, 512, 3)
    export_to_video(frames, "tiger.mp4", fps=10)

Memory savers (:mod:`vdlearn.pipelines.memory`): :meth:`~VideoCrafterPipeline.enable_model_cpu_offload`,
:meth:`~VideoCrafterPipeline.enable_sequential_cpu_offload`, ``decode_chunk_size`` and
:meth:`~VideoCrafterPipeline.enable_attention_slicing`; each gives the same video.

Randomness: the starting noise and every step's noise come from ``generator``, drawn on
the generator's device (the CPU when none is given) and moved to the execution device,
so one seeded generator gives one video whatever else runs. The official script draws
on CUDA; a CUDA generator with its seed reproduces that draw order.

Taught in notebook 10_pretrained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from vdlearn.device import get_device
from vdlearn.diffusion import NoiseSchedule, Sampler, SamplerConfig, combine_guidance
from vdlearn.io import InputError
from vdlearn.models.unet.resblock import GroupNorm32
from vdlearn.pipelines import memory
from vdlearn.pipelines.video_io import OUTPUT_TYPES, postprocess_video

#: The pipeline's components, in the order a call uses them.
COMPONENTS = ("text_encoder", "image_encoder", "image_resampler", "unet", "vae")
#: The image encoder's input side (OpenCLIP ViT-H/14).
CLIP_IMAGE_SIZE = 224


@dataclass(frozen=True)
class SamplingDefaults:
    """What a call uses when an argument is left out: the official run script's settings."""

    height: int = 320  # pixels; the latents are height / 8
    width: int = 512
    num_frames: int = 16  # the U-Net's temporal_length
    fps: int = 28  # the frame-rate condition (not the saved file's frame rate)
    num_inference_steps: int = 50  # DDIM steps
    guidance_scale: float = 12.0  # classifier-free guidance weight w
    eta: float = 1.0  # DDIM noise: 1.0 in every official script


@dataclass
class VideoPipelineOutput:
    """What a call returns: ``frames`` is a batch of videos, ``frames[i]`` one video (see ``output_type``)."""

    frames: Any


class VideoCrafterPipeline:
    """Text (and image) to video with the official VideoCrafter modules and sampler.

    Args:
        unet: a :class:`~vdlearn.models.unet.VideoUNet` (a VideoCrafter preset).
        vae: the per-frame :class:`~vdlearn.models.vae.AutoencoderKL` (SD KL-f8).
        text_encoder: OpenCLIP text tower: ``tokenize(list[str]) -> (b, 77)`` and
            ``forward(tokens) -> (b, 77, d)``.
        schedule: the :class:`~vdlearn.diffusion.NoiseSchedule` of the checkpoint.
        image_encoder, image_resampler: the I2V image branch (``preprocess``/``forward`` of an
            OpenCLIP vision tower, and the resampler to 16 tokens); ``None`` for text-to-video.
        defaults: the sampling settings a call falls back on.
        name: what the pipeline is (for messages).
    """

    def __init__(self, unet: nn.Module, vae: nn.Module, text_encoder: nn.Module, schedule: NoiseSchedule,
                 image_encoder: nn.Module | None = None, image_resampler: nn.Module | None = None,
                 defaults: SamplingDefaults | None = None, name: str = "VideoCrafter"):
        if (image_encoder is None) != (image_resampler is None):
            raise ValueError("Image-to-video needs both an image_encoder and an image_resampler (or neither).")
        self.unet, self.vae, self.text_encoder = unet, vae, text_encoder
        self.image_encoder, self.image_resampler = image_encoder, image_resampler
        self.schedule = schedule
        self.defaults = defaults or SamplingDefaults()
        self.name = name
        self.vae_decode_chunk: int | None = None  # frames per decoder call (None: all at once)
        self._offload: memory.ModelOffload | memory.SequentialOffload | None = None
        self._progress: dict = {}
        for module in self.components.values():
            module.eval().requires_grad_(False)
        _keep_fp32_norms(unet)

    # --------------------------------------------------------------------------- components
    @property
    def components(self) -> dict[str, nn.Module]:
        """``{name: module}`` of the components this pipeline has (the I2V ones only for I2V)."""
        return {n: getattr(self, n) for n in COMPONENTS if getattr(self, n) is not None}

    @property
    def is_image_to_video(self) -> bool:
        return self.image_encoder is not None

    @property
    def device(self) -> torch.device:
        """Where the computation runs (the execution device when offloading)."""
        if self._offload is not None:
            return self._offload.execution_device
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The U-Net's dtype (its GroupNorm32 weights stay float32)."""
        return self.unet.time_embed.linear_1.weight.dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> VideoCrafterPipeline:
        """Move every component (and end any offloading); ``dtype`` casts the weights too."""
        self._remove_offload()
        for module in self.components.values():
            module.to(device=device, dtype=dtype)
        _keep_fp32_norms(self.unet)
        return self

    def set_progress_bar_config(self, **kwargs) -> None:
        """Options for the step progress bar (tqdm), e.g. ``disable=True``."""
        self._progress = dict(kwargs)

    # --------------------------------------------------------------------------- memory savers
    def enable_model_cpu_offload(self, device: str | torch.device = "auto", offload_device: str = "cpu") -> None:
        """Keep every component on ``offload_device``; each goes to ``device`` (``"auto"``: the GPU) only while it works."""
        self._remove_offload()
        self._offload = memory.ModelOffload(self.components, get_device(device), offload_device)

    def enable_sequential_cpu_offload(self, device: str | torch.device = "auto", offload_device: str = "cpu") -> None:
        """Like model offload, layer by layer: each layer's weights go to ``device`` only during its forward."""
        self._remove_offload()
        self._offload = memory.SequentialOffload(self.components, get_device(device), offload_device)

    def enable_attention_slicing(self, slice_size: int | str = "auto") -> None:
        """U-Net attention on ``slice_size`` query sequences per call (``"auto"``: scores under 256 MiB)."""
        memory.enable_attention_slicing(self.unet, slice_size)

    def disable_attention_slicing(self) -> None:
        memory.disable_attention_slicing(self.unet)

    def _remove_offload(self) -> None:
        if self._offload is not None:
            self._offload.remove()
            self._offload = None

    def _use(self, name: str) -> nn.Module:
        """The component ``name``, on the execution device if model offload is on."""
        if self._offload is not None:
            self._offload.use(name)
        return getattr(self, name)

    # --------------------------------------------------------------------------- the call
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str] | None = None,
        negative_prompt: str | Sequence[str] | None = None,
        image: Any = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        fps: int | Sequence[int] | None = None,
        eta: float | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        num_videos_per_prompt: int = 1,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        decode_chunk_size: int | None = None,
        output_type: str = "np",
        return_dict: bool = True,
    ) -> VideoPipelineOutput | tuple:
        """Generate videos; returns :class:`VideoPipelineOutput` (``.frames``; see :mod:`~vdlearn.pipelines.video_io`).

        Args:
            prompt: one prompt or a list (or give ``prompt_embeds`` ``(b, n, d)`` instead).
            negative_prompt: the unconditional prompt(s); default ``""`` as in the official code.
            image: I2V only: the first-frame image, one per prompt or one for all (a PIL image,
                a ``uint8`` array ``(H, W, 3)``, or a tensor ``(b, 3, H, W)`` in [-1, 1]).
            height, width, num_frames: the video; height and width multiples of 64.
            num_inference_steps, guidance_scale, eta: DDIM steps, CFG weight (1: no guidance), DDIM noise.
            fps: the frame-rate condition, one number or one per video.
            generator: the source of all noise (same generator state, same video).
            latents: the starting noise ``x_T (b, 4, T, H/8, W/8)`` instead of drawing it.
            num_videos_per_prompt: videos per prompt (the official ``--n_samples``; all are drawn in one
                batch, while the official script runs one sample after another, so for more than one
                their noise differs from the official draws).
            prompt_embeds, negative_prompt_embeds: text embeddings used instead of the prompts.
            decode_chunk_size: frames per VAE decoder call (default ``self.vae_decode_chunk``: all).
            output_type: ``"np"``, ``"pt"``, ``"pil"`` or ``"latent"``.
            return_dict: ``False`` returns ``(frames,)``.
        """
        d = self.defaults
        height, width = height or d.height, width or d.width
        num_frames = num_frames or d.num_frames
        steps = num_inference_steps or d.num_inference_steps
        guidance_scale = d.guidance_scale if guidance_scale is None else float(guidance_scale)
        eta = d.eta if eta is None else float(eta)
        if output_type not in OUTPUT_TYPES:
            raise InputError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        if height % 64 or width % 64 or height <= 0 or width <= 0:
            raise InputError(f"height and width must be positive multiples of 64 (the latents, 1/8 of the size, go "
                             f"through 3 halvings in the U-Net); got {height}x{width}. The official sizes are "
                             f"320x512 and 576x1024.")
        device = self.device
        do_guidance = guidance_scale != 1.0

        # 1. text conditioning: prompt embeddings, and the empty prompt's for guidance (uncond_type: empty_seq)
        cond = self._text_embeddings(prompt, prompt_embeds, "prompt")  # (b, 77, d)
        b = cond.shape[0] * num_videos_per_prompt
        cond = cond.repeat_interleave(num_videos_per_prompt, dim=0)  # (b, 77, d)
        uncond = None
        if do_guidance:
            if negative_prompt_embeds is None and negative_prompt is None:
                negative_prompt = ""
            if isinstance(negative_prompt, str):
                negative_prompt = [negative_prompt]
            uncond = self._text_embeddings(negative_prompt, negative_prompt_embeds, "negative_prompt")
            uncond = self._match_batch(uncond, cond.shape[0] // num_videos_per_prompt, "negative prompts")
            uncond = uncond.repeat_interleave(num_videos_per_prompt, dim=0)  # (b, 77, d)

        # 2. image conditioning (I2V): 16 image tokens after the 77 text tokens; the zero image for guidance
        if self.is_image_to_video:
            if image is None:
                raise InputError(f"{self.name} is an image-to-video model: pass image=... (the first frame).")
            pixels = self._image_pixels(image, height, width)  # (b', 3, H, W) in [-1, 1]
            zeros = torch.zeros(1, 3, CLIP_IMAGE_SIZE, CLIP_IMAGE_SIZE, device=device)  # the unconditional image
            image_tokens, zero_tokens = self._image_tokens([pixels, zeros] if do_guidance else [pixels])
            image_tokens = self._match_batch(image_tokens, b // num_videos_per_prompt, "images")  # (b/n, 16, d)
            cond = torch.cat([cond, image_tokens.repeat_interleave(num_videos_per_prompt, dim=0)], dim=1)  # (b, 93, d)
            if do_guidance:
                uncond = torch.cat([uncond, zero_tokens.expand(b, -1, -1)], dim=1)  # (b, 93, d)
        elif image is not None:
            raise InputError(f"{self.name} is a text-to-video model; image= is for image-to-video checkpoints.")

        # 3. fps conditioning, one LongTensor entry per video
        fps = self._fps(d.fps if fps is None else fps, b, num_videos_per_prompt)

        # 4. the starting noise x_T, drawn first
        shape = (b, self.unet.config.in_channels, num_frames, height // 8, width // 8)  # (b, 4, T, H/8, W/8)
        latents = _initial_latents(latents, shape, generator, device, "b, 4, frames, height/8, width/8")

        # 5. DDIM with classifier-free guidance, two U-Net calls per step (lvdm/models/samplers/ddim.py)
        try:
            sampler = Sampler(self.schedule, SamplerConfig.preset("videocrafter", num_steps=steps, eta=eta,
                                                                  guidance_scale=guidance_scale))
        except ValueError as err:  # the official rule range(0, 1000, 1000 // S) + 1 can step past t = 999
            raise InputError(f"num_inference_steps={steps} does not fit VideoCrafter's uniform timesteps "
                             f"(range(0, 1000, 1000 // steps) + 1): {err} Use e.g. 10, 25 or 50.") from None
        unet = self._use("unet")
        cond, uncond = cond.to(device), (uncond.to(device) if uncond is not None else None)
        for i in tqdm(range(len(sampler)), **{"desc": "DDIM", "leave": False, **self._progress}):
            t = torch.full((b,), int(sampler.timesteps[i]), device=device, dtype=torch.long)  # (b,)
            x = latents.to(self.dtype)
            eps = unet(x, t, cond, fps).float()  # (b, 4, T, h, w)
            if do_guidance:
                eps_uncond = unet(x, t, uncond, fps).float()
                eps = combine_guidance(eps, eps_uncond, guidance_scale)  # e_u + w (e_c - e_u)
            noise = _randn(shape, generator, device)  # the official noise_like: a fresh draw at every step
            latents = sampler.step(eps, latents, i, noise=noise).prev_sample  # x_{t'}, scale_arr included

        if output_type == "latent":
            frames = latents
        else:
            # 6. decode every frame: z / scale_factor through the KL-f8 decoder
            vae = self._use("vae")
            chunk = decode_chunk_size if decode_chunk_size is not None else self.vae_decode_chunk
            video = vae.decode_latents(latents.to(next(vae.parameters()).dtype), frame_chunk=chunk)  # (b, 3, T, H, W)
            # 7. frames in [0, 1]
            frames = postprocess_video(video, output_type)
        if self._offload is not None:
            self._offload.offload_all()
        return VideoPipelineOutput(frames=frames) if return_dict else (frames,)

    # --------------------------------------------------------------------------- conditioning helpers
    def _text_embeddings(self, prompts, embeds: torch.Tensor | None, what: str) -> torch.Tensor:
        """``(b, n, d)`` embeddings of ``prompts``, or ``embeds`` as given."""
        if embeds is not None:
            if prompts is not None and what == "prompt":
                raise InputError("Pass either prompt or prompt_embeds, not both.")
            if embeds.ndim != 3:
                raise InputError(f"{what}_embeds must be (batch, tokens, width), got {tuple(embeds.shape)}.")
            return embeds.to(self.device)
        if prompts is None:
            raise InputError(f"Pass {what} (a string or a list of strings) or {what}_embeds.")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise InputError(f"{what} must be a string or a non-empty list of strings, got {prompts!r}.")
        encoder = self._use("text_encoder")
        tokens = encoder.tokenize(prompts).to(self.device)  # (b, 77) OpenCLIP ids, padded with 0
        return encoder(tokens)  # (b, 77, d)

    @staticmethod
    def _match_batch(t: torch.Tensor, b: int, what: str) -> torch.Tensor:
        if t.shape[0] == b:
            return t
        if t.shape[0] == 1:
            return t.expand(b, *t.shape[1:])
        raise InputError(f"Got {t.shape[0]} {what} for {b} prompts: give one for all, or one per prompt.")

    def _image_pixels(self, image, height: int, width: int) -> torch.Tensor:
        """The conditioning image(s) as ``(b, 3, H, W)`` in [-1, 1], resized to the video size.

        As ``funcs.load_image_batch``: RGB values ``v`` become ``(v / 255 - 0.5) * 2``, resized
        bilinearly with half-pixel centres and no antialiasing (``cv2.INTER_LINEAR``).
        """
        images = image if isinstance(image, list | tuple) else [image]
        tensors = []
        for im in images:
            if isinstance(im, torch.Tensor):
                x = im.float() if im.ndim == 4 else im.float()[None]  # (1 or b, 3, h, w), already in [-1, 1]
                if x.ndim != 4 or x.shape[1] != 3 or x.abs().max() > 1.0 + 1e-3:
                    raise InputError(f"An image tensor must be (b, 3, H, W) or (3, H, W) in [-1, 1], got shape "
                                     f"{tuple(im.shape)} with values up to {im.abs().max().item():.3g}.")
            else:
                array = np.asarray(im.convert("RGB") if hasattr(im, "convert") else im)
                if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
                    raise InputError(f"An image array must be uint8 (H, W, 3), got {array.dtype} {array.shape}.")
                x = torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1.0  # (1, 3, h, w)
            if x.shape[-2:] != (height, width):
                x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
            tensors.append(x)
        return torch.cat(tensors).to(self.device)  # (b, 3, H, W)

    def _image_tokens(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each image batch ``(b, 3, H, W)`` in [-1, 1] -> CLIP -> ``(b, 257, 1280)`` -> ``(b, 16, d)`` tokens."""
        encoder = self._use("image_encoder")
        dtype = encoder.pos_embed.dtype
        # CLIP input (b, 3, 224, 224) (bicubic resize, CLIP mean/std), then every token of the last block
        features = [encoder(encoder.preprocess(x).to(dtype)) for x in images]  # (b, 257, 1280) each
        resampler = self._use("image_resampler")
        return [resampler(f) for f in features] + [None] * (2 - len(images))  # (b, 16, d) each

    def _fps(self, fps, b: int, per_prompt: int) -> torch.Tensor:
        fps = torch.as_tensor(fps, dtype=torch.long).reshape(-1)
        if fps.numel() == 1:
            fps = fps.expand(b)
        elif fps.numel() * per_prompt == b:
            fps = fps.repeat_interleave(per_prompt)
        if fps.shape != (b,) or bool((fps <= 0).any()):
            raise InputError(f"fps must be one positive frame rate or one per prompt ({b // per_prompt}), "
                             f"got {fps.tolist()}.")
        return fps.to(self.device)

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}={type(m).__name__}" for n, m in self.components.items())
        return f"VideoCrafterPipeline({self.name}: {parts}, defaults={self.defaults})"


def _keep_fp32_norms(unet: nn.Module) -> None:
    """The U-Net's ``GroupNorm32`` layers compute in float32 (as VideoCrafter's): their weights stay float32
    when the rest is cast to fp16 / bf16."""
    for m in unet.modules():
        if isinstance(m, GroupNorm32):
            m.float()


def _randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device (CPU without one), moved to ``device``."""
    where = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(tuple(shape), generator=generator, device=where, dtype=torch.float32).to(device)


def _initial_latents(latents: torch.Tensor | None, shape: tuple[int, ...], generator: torch.Generator | None,
                     device: torch.device, layout: str) -> torch.Tensor:
    """The starting noise ``x_T`` of ``shape``: drawn (first, from ``generator``) or the caller's ``latents``,
    checked; float32 on ``device``. ``layout`` names the axes for the error, e.g. ``"b, 4, frames, height/8, width/8"``."""
    if latents is None:
        return _randn(shape, generator, device)
    if tuple(latents.shape) != tuple(shape):
        raise InputError(f"latents must have shape {tuple(shape)} ({layout}), got {tuple(latents.shape)}.")
    return latents.to(device=device, dtype=torch.float32)


__all__ = ["COMPONENTS", "SamplingDefaults", "VideoCrafterPipeline", "VideoPipelineOutput"]
