"""A whole official VideoCrafter checkpoint -> vdlearn's modules -> a ready pipeline.

An official ``model.ckpt`` is the ``state_dict()`` of the official ``LatentDiffusion``
(``lvdm/models/ddpm3d.py``): every part of the model, side by side, under the
attribute names of the official modules. :func:`split_checkpoint` cuts it apart:

==================================  ==========================  ===============================
prefix                              part                        vdlearn module
==================================  ==========================  ===============================
(none) ``betas`` ... ``scale_arr``  the noise schedule buffers  :class:`~vdlearn.diffusion.NoiseSchedule` (checked, not loaded)
``model.diffusion_model.``          the video U-Net             :class:`~vdlearn.models.unet.VideoUNet`
``first_stage_model.``              the KL-f8 autoencoder       :class:`~vdlearn.models.vae.AutoencoderKL`
``cond_stage_model.model.``         OpenCLIP text tower         :class:`~vdlearn.models.clip.OpenCLIPTextEncoder`
``embedder.model.`` (I2V)           OpenCLIP image tower        :class:`~vdlearn.models.clip.OpenCLIPImageEncoder`
``image_proj_model.`` (I2V)         the image-token resampler   :class:`~vdlearn.models.resampler.Resampler`
==================================  ==========================  ===============================

:func:`check_checkpoint` then compares every part with the tensors the vdlearn modules
of the checkpoint's :class:`~vdlearn.pretrained.registry.PretrainedSpec` expect (names
and shapes, built on the meta device: no memory), and the schedule buffers' *values*
with vdlearn's schedule of that spec (``betas``, ``alphas_cumprod``, ..., ``scale_arr``:
its length 1400 or 1000 tells VideoCrafter2 from VideoCrafter1-1024). A wrong or damaged
file gives **one** :class:`~vdlearn.io.CheckpointMismatchError` listing every missing,
unexpected and wrong-shape key of every part, and every schedule buffer that disagrees.
Only then are the weights converted (by :mod:`vdlearn.pretrained.videocrafter`,
:mod:`~vdlearn.pretrained.vae_layouts` and :mod:`~vdlearn.pretrained.openclip`).

Files are read safely: ``.safetensors`` as they are, pickles with
``torch.load(weights_only=True)`` (no code inside the file runs), in any of the official
wrappings (``{"state_dict": ...}``, DeepSpeed's ``{"module": ...}``, or raw), by
:func:`vdlearn.io.read_foreign_checkpoint`.

    >>> from vdlearn.pretrained import load_pipeline
    >>> pipe = load_pipeline("videocrafter2_t2v_512")          # downloads 7.4 GB once    # doctest: +SKIP

Taught in notebook 10_pretrained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vdlearn.diffusion import NoiseSchedule
from vdlearn.io import mismatch_error, read_foreign_checkpoint, unwrap_checkpoint
from vdlearn.models.clip import OpenCLIPImageConfig, OpenCLIPTextConfig
from vdlearn.models.resampler import ResamplerConfig
from vdlearn.models.unet import UNetConfig, VideoUNet
from vdlearn.models.vae import AutoencoderKL, VAEConfig
from vdlearn.pipelines.videocrafter import VideoCrafterPipeline
from vdlearn.pretrained import openclip, vae_layouts, videocrafter
from vdlearn.pretrained.hub import checkpoint_file
from vdlearn.pretrained.registry import PRETRAINED, PretrainedSpec, get_spec

#: Part name -> key prefix in the official checkpoint ("" for the top-level schedule buffers).
PREFIXES = {
    "schedule": "",
    "unet": videocrafter.UNET_PREFIX,
    "vae": vae_layouts.LDM_PREFIX,
    "text_encoder": openclip.TEXT_PREFIX,
    "image_encoder": openclip.IMAGE_PREFIX,
    "image_resampler": openclip.RESAMPLER_PREFIX,
}
PART_TITLES = {"schedule": "schedule buffers", "unet": "U-Net", "vae": "VAE", "text_encoder": "text encoder",
               "image_encoder": "image encoder", "image_resampler": "image resampler"}


# ------------------------------------------------------------------------------------------ configs
def unet_config(spec: PretrainedSpec) -> UNetConfig:
    return UNetConfig.preset(spec.unet, **spec.unet_overrides)


def vae_config(spec: PretrainedSpec) -> VAEConfig:
    return VAEConfig.preset(spec.vae, **spec.vae_overrides)


def text_config(spec: PretrainedSpec) -> OpenCLIPTextConfig:
    return OpenCLIPTextConfig.preset(spec.text_encoder, **spec.text_overrides)


def image_config(spec: PretrainedSpec) -> OpenCLIPImageConfig:
    return OpenCLIPImageConfig.preset(spec.image_encoder, **spec.image_overrides)


def resampler_config(spec: PretrainedSpec) -> ResamplerConfig:
    return ResamplerConfig.preset(spec.resampler, **spec.resampler_overrides)


# ------------------------------------------------------------------------------------------ the layout
@dataclass
class PartLayout:
    """The official tensors one part must hold (names after the part's prefix -> shapes)."""

    name: str
    prefix: str
    required: dict[str, tuple[int, ...]]
    optional: dict[str, tuple[int, ...]] = field(default_factory=dict)  # never used; checked when present

    def full(self, key: str) -> str:
        return self.prefix + key


def vae_official_shapes(cfg: VAEConfig) -> dict[str, tuple[int, ...]]:
    """Every LDM-named autoencoder tensor (``first_stage_model.`` stripped) and its shape."""
    with torch.device("meta"):
        own = {k: tuple(v.shape) for k, v in AutoencoderKL(cfg).state_dict().items()}
    return {ldm: own[ours] + ((1, 1) if conv1x1 else ()) for ours, ldm, _, conv1x1 in vae_layouts.key_table(cfg)}


def checkpoint_layout(spec: str | PretrainedSpec) -> dict[str, PartLayout]:
    """What an official checkpoint of ``spec`` holds, part by part (everything built on the meta device)."""
    spec = get_spec(spec)
    schedule = NoiseSchedule(spec.schedule).videocrafter_buffers()
    with torch.device("meta"):
        unet = VideoUNet(unet_config(spec))
    text = text_config(spec)
    parts = {
        "schedule": PartLayout("schedule", "", {k: tuple(v.shape) for k, v in schedule.items()}),
        "unet": PartLayout("unet", PREFIXES["unet"], videocrafter.official_shapes(unet)),
        "vae": PartLayout("vae", PREFIXES["vae"], vae_official_shapes(vae_config(spec))),
        "text_encoder": _encoder_part("text_encoder", openclip.official_text_shapes(text, prefix=""),
                                      openclip.text_unused_shapes(text)),
    }
    if spec.is_i2v:
        image = image_config(spec)
        parts["image_encoder"] = _encoder_part("image_encoder",
                                               openclip.official_image_shapes(image, prefix="", text=text),
                                               openclip.image_unused_shapes(image, text))
        parts["image_resampler"] = PartLayout("image_resampler", PREFIXES["image_resampler"],
                                              openclip.official_resampler_shapes(resampler_config(spec), prefix=""))
    return parts


def _encoder_part(name: str, shapes: dict, unused: dict) -> PartLayout:
    return PartLayout(name, PREFIXES[name], {k: v for k, v in shapes.items() if k not in unused},
                      {k: tuple(v) for k, v in unused.items()})


# ------------------------------------------------------------------------------------------ split and check
def split_checkpoint(state_dict: Mapping[str, torch.Tensor], parts: Mapping[str, PartLayout] | None = None
                     ) -> dict[str, dict[str, torch.Tensor]]:
    """``{part: {name without prefix: tensor}}``, plus ``"unknown"`` for keys under no part's prefix.

    Top-level keys (no dot) are the schedule buffers. ``parts`` limits the prefixes to
    those of one checkpoint kind (T2V checkpoints have no image parts).
    """
    names = list(parts) if parts is not None else list(PREFIXES)
    prefixes = sorted(((PREFIXES[n], n) for n in names if PREFIXES[n]), key=lambda p: -len(p[0]))
    out: dict[str, dict[str, torch.Tensor]] = {n: {} for n in [*names, "unknown"]}
    for key, value in state_dict.items():
        for prefix, name in prefixes:
            if key.startswith(prefix):
                out[name][key[len(prefix):]] = value
                break
        else:
            out["schedule" if "schedule" in out and "." not in key else "unknown"][key] = value
    return out


def _schedule_disagreements(found: Mapping[str, torch.Tensor], spec: PretrainedSpec) -> list[str]:
    """The checkpoint's schedule buffers whose values differ from vdlearn's schedule of ``spec``."""
    ours = NoiseSchedule(spec.schedule).videocrafter_buffers()
    out = []
    for name, theirs in found.items():
        if name not in ours or tuple(theirs.shape) != tuple(ours[name].shape):
            continue  # reported as unexpected or as a shape mismatch
        exact = theirs.dtype in (torch.float32, torch.float64)
        rtol = 1e-5 if exact else 1e-2  # fp16 / bf16 files round every value
        a, b = theirs.double(), ours[name].double()
        if not torch.allclose(a, b, rtol=rtol, atol=1e-6):
            i = int((a - b).abs().argmax())
            out.append(f"{name}: differs from vdlearn's {spec.schedule!r} schedule, e.g. at t={i}: checkpoint "
                       f"{a[i].item():.6g}, vdlearn {b[i].item():.6g}")
    return out


def check_checkpoint(state_dict: Mapping[str, torch.Tensor], spec: str | PretrainedSpec,
                     what: str = "checkpoint") -> dict[str, dict[str, torch.Tensor]]:
    """Split ``state_dict`` and check it covers ``spec`` exactly; returns the parts (prefixes stripped).

    Raises one :class:`~vdlearn.io.CheckpointMismatchError` listing the missing, unexpected and
    wrong-shape keys of all parts (full official names) and the schedule buffers that disagree.
    """
    spec = get_spec(spec)
    layout = checkpoint_layout(spec)
    parts = split_checkpoint(state_dict, layout)
    missing, unexpected, shapes, summary = {}, {}, {}, []  # per part
    for name, part in layout.items():
        found, expected = parts[name], {**part.optional, **part.required}
        m = [part.full(k) for k in part.required if k not in found]
        u = [part.full(k) for k in found if k not in expected]
        s = [f"{part.full(k)}: expected {expected[k]}, checkpoint {tuple(v.shape)}"
             for k, v in found.items() if k in expected and tuple(v.shape) != tuple(expected[k])]
        missing[name], unexpected[name], shapes[name] = m, u, s
        if m or u or s:
            summary.append(f"{PART_TITLES[name]}: {len(m)} missing, {len(u)} unexpected, {len(s)} wrong shape")
    unexpected["unknown"] = list(parts["unknown"])
    if parts["unknown"]:
        summary.append(f"{len(parts['unknown'])} keys outside this model's parts")
    values = _schedule_disagreements(parts["schedule"], spec)
    if values:
        summary.append(f"{len(values)} schedule buffers with other values")
    missing, unexpected, shapes = (_every_part_first(x) for x in (missing, unexpected, shapes))
    if not (missing or unexpected or shapes or values):
        return parts
    hint = ""
    if values:
        hint += "  schedule buffers that differ (" + str(len(values)) + "):\n    " + "\n    ".join(values) + "\n"
    guess = _guess(parts["unet"], spec)
    hint += (guess or f"Check that the file is the {spec.title} checkpoint ({spec.url}) and that it is complete; "
             f"a truncated download or another model's file gives such lists.")
    raise mismatch_error(f"The {what} does not match {spec.name} ({'; '.join(summary)}).",
                         missing, unexpected, shapes, limit=SHOWN, hint=hint)


#: How many keys of each list an error shows (each part with bad keys gets its share of them first).
SHOWN = 24


def _every_part_first(per_part: Mapping[str, list[str]]) -> list[str]:
    """One list whose first :data:`SHOWN` items hold the first keys of every part that has any, part by part."""
    lists = [keys for keys in per_part.values() if keys]
    quota, left = [0] * len(lists), SHOWN  # shown keys per part, handed out one round at a time
    while left and any(q < len(keys) for q, keys in zip(quota, lists, strict=True)):
        for i, keys in enumerate(lists):
            if left and quota[i] < len(keys):
                quota[i], left = quota[i] + 1, left - 1
    pairs = list(zip(quota, lists, strict=True))
    return [k for q, keys in pairs for k in keys[:q]] + [k for q, keys in pairs for k in keys[q:]]


def _guess(unet_part: Mapping[str, torch.Tensor], spec: PretrainedSpec) -> str:
    """A hint naming the checkpoint kind the U-Net keys look like, if it is another known one."""
    if not unet_part:
        return ""
    preset = videocrafter.detect_preset(unet_part)
    if preset == spec.unet or preset not in PRETRAINED:
        return ""
    other = PRETRAINED[preset]
    return (f"Its U-Net looks like {other.title} ({other.name}): load it with "
            f"load_pipeline({other.name!r}, path=...).")


# ------------------------------------------------------------------------------------------ building
def components_from_checkpoint(state_dict: Mapping[str, torch.Tensor], spec: str | PretrainedSpec,
                               dtype: torch.dtype = torch.float32, what: str = "checkpoint") -> dict:
    """Check ``state_dict`` against ``spec`` and build every component from it (on the CPU, in ``dtype``).

    Returns ``{"unet", "vae", "text_encoder", "schedule"[, "image_encoder", "image_resampler"]}``.
    """
    spec = get_spec(spec)
    parts = check_checkpoint(unwrap_checkpoint(state_dict), spec, what)
    components = {
        "unet": videocrafter.load_videocrafter_unet(parts["unet"], unet_config(spec), dtype=dtype),
        "vae": vae_layouts.load_ldm_vae(parts["vae"], vae_config(spec)).to(dtype),
        "text_encoder": openclip.text_from_official(parts["text_encoder"], prefix="",
                                                    config=text_config(spec)).to(dtype),
        "schedule": NoiseSchedule(spec.schedule),
    }
    if spec.is_i2v:
        components["image_encoder"] = openclip.image_from_official(
            parts["image_encoder"], prefix="", config=image_config(spec), text=text_config(spec)).to(dtype)
        components["image_resampler"] = openclip.resampler_from_official(
            parts["image_resampler"], prefix="", config=resampler_config(spec)).to(dtype)
    for name, module in components.items():
        if name != "schedule":
            module.eval().requires_grad_(False)
    return components


def pipeline_from_checkpoint(state_dict: Mapping[str, torch.Tensor], spec: str | PretrainedSpec,
                             dtype: torch.dtype = torch.float32, what: str = "checkpoint") -> VideoCrafterPipeline:
    """A :class:`VideoCrafterPipeline` from an already read official state dict."""
    spec = get_spec(spec)
    components = components_from_checkpoint(state_dict, spec, dtype, what)
    return VideoCrafterPipeline(**components, defaults=spec.sampling, name=spec.title)


def load_pipeline(
    name: str | PretrainedSpec,
    path: str | Path | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    local_files_only: bool | None = None,
    cache_dir: str | Path | None = None,
) -> VideoCrafterPipeline:
    """The official checkpoint ``name`` as a ready :class:`~vdlearn.pipelines.videocrafter.VideoCrafterPipeline`.

    Args:
        name: ``"videocrafter2_t2v_512"``, ``"videocrafter1_t2v_1024"`` or ``"videocrafter1_i2v_512"``
            (see :data:`~vdlearn.pretrained.registry.PRETRAINED`), or a spec.
        path: a local ``model.ckpt`` (or ``.safetensors``), or the folder holding it. Without
            it the file comes from the Hugging Face Hub (downloaded once into its cache).
        dtype: the weights' dtype (``torch.float16`` / ``torch.bfloat16`` halve the memory).
        local_files_only: never download (``None``: follow ``HF_HUB_OFFLINE``).
        cache_dir: another Hugging Face cache folder.

    The pipeline is on the CPU: ``.to("cuda")``, or ``enable_model_cpu_offload()``.

    Raises:
        CheckpointNotFoundError: the file is missing and cannot be downloaded (the message
            says which file, from where, and what ``path=`` to pass).
        CheckpointMismatchError: the file is not this checkpoint; the message lists every
            missing, unexpected and wrong-shape key, and any schedule buffer that differs.
    """
    spec = get_spec(name)
    file = checkpoint_file(spec, path, local_files_only=local_files_only, cache_dir=cache_dir)
    state = read_foreign_checkpoint(file)
    pipe = pipeline_from_checkpoint(state, spec, dtype, what=f"checkpoint {file}")
    del state
    return pipe


__all__ = [
    "PREFIXES",
    "PartLayout",
    "check_checkpoint",
    "checkpoint_layout",
    "components_from_checkpoint",
    "load_pipeline",
    "pipeline_from_checkpoint",
    "split_checkpoint",
    "vae_official_shapes",
]
