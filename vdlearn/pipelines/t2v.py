r"""Text-to-video: a text encoder, a video U-Net, a noise schedule and a frozen VAE.

This is VideoCrafter1's T2V model (Chen et al. 2023, sec. 3) at toy scale: a video
is encoded frame by frame into latents ``(b, 4, t, h/4, w/4)`` by the frozen
autoencoder (notebook 02), the video U-Net (notebook 04) learns to denoise them given
the caption's token features (cross-attention) and the fps (added to the timestep
embedding), and at sampling time DDIM walks from noise to a clean latent video that
the decoder turns into frames. Classifier-free guidance mixes the predictions for the
prompt and for the empty prompt ``""`` (sec. 3.2; the model is trained with the
caption dropped 10% of the time).

The trainable part is :class:`TextToVideo` (text encoder + U-Net, one ``nn.Module``, so
one optimizer and, under ``accelerate``, one DDP wrapper). The VAE stays outside its
``state_dict``: it is frozen, shipped separately in ``data/vae`` and named in the config.

    >>> pipe = TextToVideo.load_shipped()     # the course's base model, data/t2v/toy_layout_fpscond.safetensors
    >>> video = pipe.generate(["a red 3 moving left quickly"], seed=0)  # (1, 3, 8, 32, 32) in [-1, 1]

Trained by :mod:`vdlearn.training.t2v` (``vdlearn train t2v``); measured by
:mod:`vdlearn.eval.generation` (``vdlearn eval``). Taught in notebook 05_text_to_video.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from vdlearn.data.captions import parse_caption
from vdlearn.diffusion import NoiseSchedule, Sampler, SamplerConfig, q_sample, sample
from vdlearn.io import (
    CheckpointMismatchError,
    InputError,
    check_seed,
    data_dir,
    load_checkpoint,
    load_state_dict_checked,
    save_checkpoint,
)
from vdlearn.models.text import TEXT_PRESETS, ToyTextEncoder
from vdlearn.models.unet import CaptionLayoutUNet, UNetConfig, VideoUNet

CHECKPOINT_KIND = "vdlearn.t2v"


@dataclass
class T2VConfig:
    """What a text-to-video model is made of. Named presets: :data:`T2V_PRESETS`."""

    name: str = "toy"  # preset this config came from (informative)
    unet: str = "toy"  # VideoUNet preset
    unet_overrides: dict[str, Any] = field(default_factory=dict)  # fields of UNetConfig changed from the preset
    text: str = "toy"  # ToyTextEncoder preset
    text_overrides: dict[str, Any] = field(default_factory=lambda: {"width": 64})  # width must equal context_dim
    schedule: str = "toy"  # NoiseSchedule preset (cosine betas, v-prediction)
    vae: str = "toy32"  # shipped VAE (data/vae/<vae>.safetensors) whose latents the U-Net denoises
    temporal_decoder: bool = False  # decode with the VAE's temporal decoder (data/vae/<vae>_temporal)
    world: str = "toy32_8f"  # toy-world preset the model is trained on
    frames: int = 8  # frames per generated clip
    size: int = 32  # frame height and width in pixels
    latent_channels: int = 4  # channels of the VAE latents
    downsample: int = 4  # VAE downsampling factor
    default_fps: int = 8  # fps used when a caller gives none
    sampler: str = "toy"  # SamplerConfig preset for generate()
    num_steps: int = 50  # DDIM steps for generate()
    guidance_scale: float = 4.0  # classifier-free guidance weight for generate()

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """``(c, t, h, w)`` of one latent clip."""
        s = self.size // self.downsample
        return (self.latent_channels, self.frames, s, s)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> T2VConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown T2VConfig fields {unknown}; known fields: {sorted(known)}.")
        return cls(**d)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> T2VConfig:
        if name not in T2V_PRESETS:
            raise KeyError(f"Unknown text-to-video preset {name!r}; known presets: {sorted(T2V_PRESETS)}.")
        return dataclasses.replace(T2V_PRESETS[name], **overrides)


#: Named configurations. ``toy``: the shipped model (5.1M-parameter U-Net, 0.1M text encoder, the
#: VideoCrafter2 layout); ``toy_vc1``: the same widths in VideoCrafter1's layout (no temporal
#: convolutions; Shaw relative frame positions in temporal attention); ``toy_layout``: ``toy`` plus a
#: caption layout after conv_in (vdlearn/models/unet/layout.py: the caption's mean clip, which the
#: toy U-Net does not learn for the direction of motion); ``tiny``: a quarter-width model for tests and
#: seconds-long demos (it learns little); ``tiny_layout``: ``tiny`` with a caption layout.
#:
#: Frame positions and frame rates (the experiments of ``data/t2v/README.md``, trained on the world at
#: 4, 8 and 16 fps, ``toy32_8f_fps``, without dropout in the temporal convolutions):
#: ``toy_abspos``: ``toy``'s VideoCrafter2 layout with *absolute* frame positions in temporal attention,
#: as AnimateDiff's motion module adds them; ``toy_vc2_fps``: the same without positions (VideoCrafter2
#: exactly); ``toy_rope``: LaVie's rotary positions plus T5 bias; ``toy_latte_pos``: ``toy_abspos`` plus
#: Latte's 2-D sin-cos positions in every spatial transformer (placing them in a U-Net is vdlearn's
#: own); ``toy_layout_fps``: ``toy_vc2_fps`` plus the caption layout (vdlearn's own), trained from scratch;
#: ``toy_layout_fpscond``: the same with a caption layout that also reads the fps (vdlearn's own);
#: ``toy_layout_fpscond_attn4``: the same with spatial and temporal transformers at the 4 x 4 level only,
#: none at the full 8 x 8 latent (a 28% cheaper training step that learns far less per step; data/t2v/README.md,
#: "Experiments: more images, a cheaper step, bf16"); ``toy_layout_fpscond_w16``: the same at half the width
#: (16/32/64 channels, 2.0M parameters; the capacity probe of data/t2v/README.md, "Experiments: half the width").
T2V_PRESETS: dict[str, T2VConfig] = {
    "toy": T2VConfig(),
    "toy_vc1": T2VConfig(name="toy_vc1", unet_overrides={"temporal_conv": False, "temporal_position": "relative"}),
    "tiny": T2VConfig(
        name="tiny",
        # no dropout: one process and two then see exactly the same computation (tests/test_trainer.py)
        unet_overrides={"model_channels": 16, "context_dim": 32, "head_channels": 8, "init_attention_heads": 2,
                        "temporal_conv_dropout": 0.0},
        text="tiny", text_overrides={},
    ),
}
T2V_PRESETS["toy_layout"] = dataclasses.replace(
    T2V_PRESETS["toy"], name="toy_layout", unet_overrides={"caption_layout": (8, 8, 8)})  # (frames, h/4, w/4)
T2V_PRESETS["tiny_layout"] = dataclasses.replace(
    T2V_PRESETS["tiny"], name="tiny_layout",
    unet_overrides={**T2V_PRESETS["tiny"].unet_overrides, "caption_layout": (8, 8, 8)})


_FPS_WORLD = {"world": "toy32_8f_fps"}
T2V_PRESETS["toy_abspos"] = T2VConfig(name="toy_abspos", unet_overrides={"temporal_position": "absolute",
                                                                        "temporal_conv_dropout": 0.0}, **_FPS_WORLD)
T2V_PRESETS["toy_vc2_fps"] = T2VConfig(name="toy_vc2_fps", unet_overrides={"temporal_conv_dropout": 0.0}, **_FPS_WORLD)
T2V_PRESETS["toy_latte_pos"] = T2VConfig(name="toy_latte_pos", unet_overrides={
    "temporal_position": "absolute", "spatial_position": "absolute", "temporal_conv_dropout": 0.0}, **_FPS_WORLD)
T2V_PRESETS["toy_layout_fps"] = T2VConfig(name="toy_layout_fps", unet_overrides={
    "temporal_conv_dropout": 0.0, "caption_layout": (8, 8, 8)}, **_FPS_WORLD)
T2V_PRESETS["toy_layout_fpscond"] = T2VConfig(name="toy_layout_fpscond", unet_overrides={
    "temporal_conv_dropout": 0.0, "caption_layout": (8, 8, 8), "caption_layout_fps_dim": 32}, **_FPS_WORLD)
T2V_PRESETS["toy_layout_fpscond_attn4"] = dataclasses.replace(
    T2V_PRESETS["toy_layout_fpscond"], name="toy_layout_fpscond_attn4",
    unet_overrides={**T2V_PRESETS["toy_layout_fpscond"].unet_overrides, "attention_levels": (1,)})
T2V_PRESETS["toy_layout_fpscond_w16"] = dataclasses.replace(
    T2V_PRESETS["toy_layout_fpscond"], name="toy_layout_fpscond_w16",
    unet_overrides={**T2V_PRESETS["toy_layout_fpscond"].unet_overrides, "model_channels": 16})
T2V_PRESETS["toy_rope"] = T2VConfig(name="toy_rope", unet_overrides={"temporal_position": "rope_bias", "rotary_dim": 16,
                                                                    "temporal_conv_dropout": 0.0}, **_FPS_WORLD)


#: The course's base text-to-video model (notebook 05, section 10; data/t2v/README.md): the ``toy_layout_fpscond``
#: architecture (VideoCrafter2's temporal layers plus vdlearn's own fps-aware caption layout), trained from
#: scratch on clips at 4, 8 and 16 fps with LaVie's joint image-video batches. What ``vdlearn sample``,
#: ``vdlearn eval`` and ``TextToVideo.load_shipped()`` use when no checkpoint is named.
BASE_MODEL = "toy_layout_fpscond"


class TextToVideo(nn.Module):
    """Text encoder + video U-Net; generation adds the schedule, the sampler and the frozen VAE.

    ``forward(x_t (b, 4, t, h, w), timesteps (b,), tokens (b, n) long, fps (b,))`` returns the
    U-Net's prediction (``v`` for the toy schedule); this is the denoiser the training loss calls.
    """

    def __init__(self, config: T2VConfig | None = None):
        super().__init__()
        self.config = cfg = config or T2VConfig()
        text_cfg = dataclasses.replace(TEXT_PRESETS[cfg.text], **cfg.text_overrides)
        self.text_encoder = ToyTextEncoder(text_cfg)
        overrides = dict(cfg.unet_overrides)
        layout, rank = overrides.pop("caption_layout", None), overrides.pop("caption_layout_rank", 4)
        layout_fps_dim = overrides.pop("caption_layout_fps_dim", 0)
        unet_cfg = UNetConfig.preset(cfg.unet, **overrides)
        # a caption layout (vdlearn's own addition, toy_layout / tiny_layout) is a subclass of the paper U-Net
        self.unet = (CaptionLayoutUNet(unet_cfg, layout, rank, layout_fps_dim) if layout is not None
                     else VideoUNet(unet_cfg))
        if self.unet.config.context_dim != text_cfg.width:
            raise ValueError(
                f"The text encoder's width ({text_cfg.width}) must equal the U-Net's context_dim "
                f"({self.unet.config.context_dim}); set text_overrides={{'width': {self.unet.config.context_dim}}}."
            )
        if self.unet.config.in_channels != cfg.latent_channels:
            raise ValueError(f"The U-Net reads {self.unet.config.in_channels} channels but the VAE latents have "
                             f"{cfg.latent_channels}.")
        self.schedule = NoiseSchedule(cfg.schedule)
        object.__setattr__(self, "_vae", None)  # frozen, loaded on first use, not part of state_dict()

    @classmethod
    def from_preset(cls, name: str = "toy", **overrides: Any) -> TextToVideo:
        return cls(T2VConfig.preset(name, **overrides))

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def tokenizer(self):
        return self.text_encoder.tokenizer

    # ------------------------------------------------------------------ pieces
    @property
    def vae(self):
        """The frozen autoencoder named in the config (loaded from ``data/vae`` on first use)."""
        if self._vae is None:
            from vdlearn.models.vae import load_toy_vae

            vae = load_toy_vae(self.config.vae, temporal=self.config.temporal_decoder)
            vae.requires_grad_(False)
            object.__setattr__(self, "_vae", vae.eval())
        if self._vae.device != self.device:
            self._vae.to(self.device)
        return self._vae

    def set_vae(self, vae) -> None:
        """Use this autoencoder instead of the shipped one (e.g. the temporal decoder)."""
        vae.requires_grad_(False)
        object.__setattr__(self, "_vae", vae.eval())

    def tokenize(self, prompts: Sequence[str] | str) -> torch.Tensor:
        """``(b, n)`` word ids; an unknown word raises an error naming the vocabulary."""
        return self.tokenizer(prompts)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, tokens: torch.Tensor,
                fps: torch.Tensor | None = None, num_images: int = 0) -> torch.Tensor:
        """Predict the target for ``x (b, 4, t, h, w)``; ``tokens (b, n)`` or one caption per frame ``(b, t, n)``.

        ``num_images``: the last ``num_images`` frames are independent images with their own
        captions (joint image-video training, LaVie sec. 3.4); temporal layers skip them.
        """
        if tokens.ndim == 3:  # one caption per frame
            b, t, n = tokens.shape
            context = self.text_encoder(tokens.reshape(b * t, n))  # (b*t, n, d)
            context = context.reshape(b, t, *context.shape[1:])  # (b, t, n, d)
        else:
            context = self.text_encoder(tokens)  # (b, n, d)
        return self.unet(x, timesteps, context, fps, num_images=num_images)  # (b, 4, t, h, w)

    # --------------------------------------------------------------- generation
    def _fps(self, fps, b: int) -> torch.Tensor:
        if fps is None:
            fps = self.config.default_fps
        fps = torch.as_tensor(fps, dtype=torch.long).reshape(-1)
        if fps.numel() == 1:
            fps = fps.expand(b)
        if fps.shape != (b,):
            raise ValueError(f"Give one fps for all prompts or one per prompt; got {fps.numel()} for {b} prompts.")
        if (fps <= 0).any():
            raise InputError(f"fps must be positive frame rates; got {fps.tolist()}.")
        return fps

    def initial_noise(self, n: int, seed: int = 0) -> torch.Tensor:
        """``(n, 4, t, h, w)`` starting noise; clip ``i`` uses seed ``seed + i``, so a clip does not
        depend on which other prompts share its batch."""
        shape = self.config.latent_shape
        check_seed(seed, n)
        return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed + i)) for i in range(n)])

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str] | str,
        *,
        fps: int | Sequence[int] | torch.Tensor | None = None,
        guidance_scale: float | None = None,
        num_steps: int | None = None,
        seed: int = 0,
        batch_size: int = 64,
        sampler: str | SamplerConfig | None = None,
        return_latents: bool = False,
        callback: Callable | None = None,
        progress: bool = True,
        init_latents: torch.Tensor | None = None,
        t_start: int | None = None,
    ) -> torch.Tensor:
        """Videos ``(b, 3, t, h, w)`` in [-1, 1] for ``prompts`` (or their latents).

        ``guidance_scale`` (default from the config) weights the prompt against the empty
        prompt: ``out = uncond + w * (cond - uncond)``; 1 means no guidance. Each clip's
        noise comes from ``seed + i``: the same seed and prompt give the same video.

        ``init_latents (b, 4, t, h, w)`` with ``t_start``: SDEdit (Meng et al. 2022) instead of
        pure noise: the latents are noised to the first ladder step at or below ``t_start``
        with that same noise, and only the steps from there on run. Notebook 05 uses it to
        find where along the ladder a model loses the motion.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("generate() needs at least one prompt.")
        for p in prompts:
            if p.strip():
                parse_caption(p)  # unknown words and malformed captions fail here, with the vocabulary
        cfg = self.config
        w = cfg.guidance_scale if guidance_scale is None else float(guidance_scale)
        steps = cfg.num_steps if num_steps is None else int(num_steps)
        if steps < 1:
            raise InputError(f"num_steps must be at least 1 DDIM step; got {steps}.")
        if w < 0:
            import warnings

            warnings.warn(f"guidance_scale {w} < 0 steers away from the prompt (1: no guidance, 0: unconditional).",
                          stacklevel=2)
        sampler_cfg = sampler if isinstance(sampler, SamplerConfig) else SamplerConfig.preset(
            sampler or cfg.sampler, num_steps=steps, guidance_scale=w)
        device = self.device
        was_training = self.training
        self.eval()
        fps_all = self._fps(fps, len(prompts))
        noise = self.initial_noise(len(prompts), seed)
        sampler_obj = Sampler(self.schedule, sampler_cfg)
        if (init_latents is None) != (t_start is None):
            raise InputError("init_latents and t_start go together: give both (SDEdit) or neither.")
        if init_latents is not None:
            if tuple(init_latents.shape) != tuple(noise.shape):
                raise InputError(f"init_latents must have shape {tuple(noise.shape)} (one latent clip per prompt); "
                                 f"got {tuple(init_latents.shape)}.")
            t0 = int(sampler_obj.timesteps[sampler_obj.first_index(t_start)])
            noise = q_sample(self.schedule, init_latents.float().cpu(), t0, noise)  # (b, 4, t, h, w)
        uncond_ctx = self.text_encoder(self.tokenize([""]))  # (1, n, d): the empty prompt
        out = []
        chunks = range(0, len(prompts), batch_size)
        for start in tqdm(chunks, desc="generating", disable=not progress or len(chunks) == 1, leave=False):
            chunk = prompts[start : start + batch_size]
            b = len(chunk)
            context = self.text_encoder(self.tokenize(chunk))  # (b, n, d)
            f = fps_all[start : start + b].to(device)
            latents = sample(
                self.unet, (b, *cfg.latent_shape), self.schedule, sampler_obj,
                cond={"context": context, "fps": f},
                uncond={"context": uncond_ctx, "fps": f} if w != 1.0 else None,
                x_T=noise[start : start + b].to(device), device=device, callback=callback,
                progress=progress and len(chunks) == 1, t_start=t_start,
            )  # (b, 4, t, h, w)
            out.append(latents if return_latents else self.vae.decode_latents(latents).clamp(-1, 1))
        self.train(was_training)
        return torch.cat(out)

    # -------------------------------------------------------------- save / load
    def save(self, path: str | Path, meta: dict | None = None, dtype: torch.dtype | None = None) -> Path:
        """Weights (safetensors) plus a json sidecar holding the config and ``meta``.

        ``dtype`` (e.g. ``torch.float16``) stores the floating-point weights in that precision, half
        the bytes (the shipped models, ``vdlearn ship``); :meth:`load` gives float32 parameters again.
        """
        meta = {"kind": CHECKPOINT_KIND, "t2v_config": self.config.to_dict(), **(meta or {})}
        return save_checkpoint(path, self.state_dict(), meta, dtype=dtype)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> TextToVideo:
        """A model written by :meth:`save` (or the final ``t2v.safetensors`` of ``vdlearn train t2v``)."""
        state, meta = load_checkpoint(path)
        if meta.get("kind") == "training_state":
            raise ValueError(
                f"{path} is a training state (for --resume), not a finished model. Use OUT/t2v.safetensors, "
                f"which `vdlearn train t2v` writes at the end (EMA weights)."
            )
        if meta.get("kind") != CHECKPOINT_KIND or "t2v_config" not in meta:
            raise CheckpointMismatchError(
                f"{path} is not a vdlearn text-to-video checkpoint (its json says kind={meta.get('kind')!r}); "
                f"expected kind={CHECKPOINT_KIND!r} with a 't2v_config'."
            )
        model = cls(T2VConfig.from_dict(meta["t2v_config"]))
        load_state_dict_checked(model, state, f"text-to-video checkpoint {path}")
        model.meta = meta
        return model.to(device).eval()

    @classmethod
    def load_shipped(cls, name: str = BASE_MODEL, device: str | torch.device = "cpu") -> TextToVideo:
        """A model shipped in ``data/t2v/<name>.safetensors``; by default the course's base model.

        ``TextToVideo.load_shipped()`` is the call every later notebook starts from: :data:`BASE_MODEL`,
        trained from scratch with the command in its json (``pipe.meta["command"]``). ``"toy"`` is the
        model whose missing direction notebook 05 investigates.
        """
        path = shipped_t2v_path(name)
        if not path.exists():
            shipped = sorted(p.stem for p in path.parent.glob("*.safetensors"))
            raise FileNotFoundError(
                f"No shipped text-to-video model at {path} (shipped there: {', '.join(shipped) or 'none'}). "
                f"data/t2v/README.md gives the command that trains {name!r}; load its OUT/t2v.safetensors with "
                f"TextToVideo.load, or set $VDLEARN_DATA to the folder holding t2v/."
            )
        return cls.load(path, device)


def shipped_t2v_path(name: str = BASE_MODEL) -> Path:
    return data_dir() / "t2v" / f"{name}.safetensors"


__all__ = ["BASE_MODEL", "CHECKPOINT_KIND", "T2V_PRESETS", "T2VConfig", "TextToVideo", "shipped_t2v_path"]
