"""LaVie's official files on disk -> the three stage pipelines and the cascade (:mod:`vdlearn.pipelines.lavie`).

LaVie (Wang et al. 2023, arXiv 2309.15103) runs on five downloads, laid out by the official
README in one folder ``pretrained_models/`` (the scripts' ``pretrained_path``):

=========================================  =====================================  ==================================
file                                       Hugging Face repository                read by
=========================================  =====================================  ==================================
``lavie_base.pt``                          ``Vchitect/LaVie``                     :func:`~vdlearn.pretrained.lavie.load_lavie_unet`
``lavie_interpolation.pt``                 ``Vchitect/LaVie``                     (``{"ema": state_dict}``, fp32)
``lavie_vsr.pt``                           ``Vchitect/LaVie``
``stable-diffusion-v1-4/``                 ``CompVis/stable-diffusion-v1-4``      ``text_encoder/``: :mod:`~vdlearn.pretrained.hf_clip`;
                                                                                  ``vae/``: :mod:`~vdlearn.pretrained.vae_layouts`
``stable-diffusion-x4-upscaler/``          ``stabilityai/stable-diffusion-x4-upscaler``  ``text_encoder/`` (OpenCLIP-H in transformers'
                                                                                  layout), ``vae/``, ``scheduler/``,
                                                                                  ``low_res_scheduler/``
=========================================  =====================================  ==================================

The VAEs' architecture comes from each folder's ``vae/config.json`` and the latent scales are the
official constants (0.18215 in ``pipeline_videogen.py`` and ``interpolation/sample.py``; 0.08333
in LaVie's ``vsr/configs/vae_config.json``, which the VSR script uses instead of the folder's config).
The VSR sampler follows ``vsr/sample.py``: the folder's ``scheduler/scheduler_config.json`` with
``beta_schedule`` forced to ``"linear"`` (its betas, prediction type, ``steps_offset`` and
``set_alpha_to_one`` are read); the low-res noise augmentation uses
``low_res_scheduler/scheduler_config.json``. Without those json files the presets ``lavie_vsr`` /
``lavie_vsr_low_res`` are used.

**Where the files come from.** ``load_lavie_pipeline("pretrained_models")`` reads the official folder;
single files can be given (``base=``, ``sd14=``, ...). A file given neither way comes from the Hugging
Face Hub (:func:`hub_file`): ``hf_hub_download`` for the ``lavie_*.pt`` files and ``snapshot_download``
of only the sub-folders the loader reads for the two diffusers repositories, through the shared HF cache,
so a second call downloads nothing; ``HF_HUB_OFFLINE=1`` (or ``local_files_only=True``) looks in the
cache only. A file that is not there and cannot be fetched raises
:class:`~vdlearn.pretrained.hub.CheckpointNotFoundError` naming the file, its repository and where
to put it.

Taught in notebook 10_pretrained.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import torch

from vdlearn.diffusion import NoiseSchedule, SamplerConfig, ScheduleConfig
from vdlearn.io import read_foreign_checkpoint
from vdlearn.models.unet import UNetConfig
from vdlearn.models.vae import AutoencoderKL
from vdlearn.pipelines.lavie import (
    STAGES,
    LaVieBasePipeline,
    LaVieCascade,
    LaVieInterpolationPipeline,
    LaVieVSRPipeline,
)
from vdlearn.pretrained import hf_clip, vae_layouts
from vdlearn.pretrained.hub import CheckpointNotFoundError, offline_mode, unreachable
from vdlearn.pretrained.lavie import load_lavie_unet

#: What each argument of :func:`load_lavie_pipeline` is: (official name in pretrained_models/, HF repository).
LAVIE_FILES: dict[str, tuple[str, str]] = {
    "base": ("lavie_base.pt", "Vchitect/LaVie"),
    "interpolation": ("lavie_interpolation.pt", "Vchitect/LaVie"),
    "vsr": ("lavie_vsr.pt", "Vchitect/LaVie"),
    "sd14": ("stable-diffusion-v1-4", "CompVis/stable-diffusion-v1-4"),
    "x4": ("stable-diffusion-x4-upscaler", "stabilityai/stable-diffusion-x4-upscaler"),
}
#: The latent scales of the official code (not read from the folders' configs).
SD_SCALE, X4_SCALE = 0.18215, 0.08333
#: Default padding of each tokenizer when its files do not say: SD 1.4 pads with <|endoftext|>, the x4
#: upscaler's (OpenCLIP-H, as SD 2) with "!" = 0.
DEFAULT_PAD = {"sd14": 49407, "x4": 0}


#: What the loader reads of the two diffusers repositories (all it downloads of them): the weights as
#: safetensors, their configs, the tokenizer's padding and the x4 upscaler's two scheduler configs.
HUB_PATTERNS: dict[str, list[str]] = {
    "sd14": ["text_encoder/config.json", "text_encoder/model.safetensors", "vae/config.json",
             "vae/diffusion_pytorch_model.safetensors", "tokenizer/*.json"],
    "x4": ["text_encoder/config.json", "text_encoder/model.safetensors", "vae/config.json",
           "vae/diffusion_pytorch_model.safetensors", "tokenizer/*.json", "scheduler/scheduler_config.json",
           "low_res_scheduler/scheduler_config.json"],
}


def missing_file_message(what: str, path: Path | None, inside: str | None = None, reason: str | None = None) -> str:
    """What to do when one of LaVie's files is not at ``path``: the file, its repository, where it goes."""
    name, repo = LAVIE_FILES[what]
    piece = f"{name}/{inside}" if inside else name
    if what in ("base", "interpolation", "vsr"):
        get = f"hf download {repo} {name} --local-dir pretrained_models"
    else:
        patterns = " ".join(f"--include '{p}'" for p in HUB_PATTERNS[what])
        get = f"hf download {repo} {patterns} --local-dir pretrained_models/{name}"
    why = reason or f"nothing at {path}{f' (expected {inside} inside {name})' if inside else ''}"
    return (f"LaVie's {what} file is not on this machine: {why}.\n"
            f"  file:  {piece} from https://huggingface.co/{repo}\n"
            f"Get it on a machine with internet access:\n    {get}\n"
            f"and put it where the official README does, pretrained_models/{name}; then pass "
            f"load_lavie_pipeline('pretrained_models') or {what}='<path>'.")


def hub_file(what: str, *, local_files_only: bool | None = None, cache_dir: str | Path | None = None) -> Path:
    """One of LaVie's files (:data:`LAVIE_FILES`) from the Hugging Face Hub, or its cached copy.

    A ``lavie_*.pt`` file is one ``hf_hub_download``; a diffusers repository (``sd14``, ``x4``) is a
    ``snapshot_download`` of :data:`HUB_PATTERNS` only, returned as the folder. ``local_files_only=None``
    follows ``HF_HUB_OFFLINE``. Raises :class:`CheckpointNotFoundError` with what to download and where.
    """
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError

    name, repo = LAVIE_FILES[what]
    if local_files_only is None:
        local_files_only = offline_mode()
    try:
        if what in HUB_PATTERNS:
            return Path(snapshot_download(repo, allow_patterns=HUB_PATTERNS[what], cache_dir=cache_dir,
                                          local_files_only=local_files_only))
        return Path(hf_hub_download(repo, name, cache_dir=cache_dir, local_files_only=local_files_only))
    except (OSError, EntryNotFoundError) as err:  # offline, no network, no such file, gated, disk
        raise CheckpointNotFoundError(missing_file_message(what, None, reason=unreachable(err, local_files_only,
                                                                                           cache_dir))) from None


def _need(what: str, path: Path, inside: str | None = None) -> Path:
    target = path / inside if inside else path
    if not target.exists():
        raise CheckpointNotFoundError(missing_file_message(what, path, inside))
    return target


def _weights(what: str, folder: Path) -> Path:
    """The weights file of a diffusers / transformers sub-folder (safetensors preferred)."""
    names = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "model.safetensors",
             "pytorch_model.bin")
    found = next((folder / n for n in names if (folder / n).exists()), None)
    if found is None:
        raise CheckpointNotFoundError(missing_file_message(what, folder.parent, f"{folder.name}/{names[0]}"))
    return found


def load_vae(what: str, folder: Path, scale: float) -> AutoencoderKL:
    """``<folder>/vae`` (diffusers ``AutoencoderKL``) as a vdlearn :class:`AutoencoderKL` with the official scale."""
    vae_dir = _need(what, folder, "vae/config.json").parent
    config = vae_layouts.config_from_diffusers(json.loads((vae_dir / "config.json").read_text()))
    config = config.replace(scale_factor=scale)
    state = vae_layouts.diffusers_to_vdlearn(read_foreign_checkpoint(_weights(what, vae_dir)), config)
    return vae_layouts._model_from_state(config, state, f"{folder.name} autoencoder").eval()


def tokenizer_pad_id(folder: Path, default: int) -> int:
    """The id the folder's ``tokenizer/`` pads with (``special_tokens_map.json`` + ``vocab.json``), else ``default``."""
    tok = folder / "tokenizer"
    try:
        special = json.loads((tok / "special_tokens_map.json").read_text())
        vocab = json.loads((tok / "vocab.json").read_text())
    except (OSError, ValueError):
        return default
    pad = special.get("pad_token")
    pad = pad.get("content") if isinstance(pad, Mapping) else pad
    return int(vocab[pad]) if pad in vocab else default


def load_text_encoder(what: str, folder: Path):
    """``<folder>/text_encoder`` (transformers ``CLIPTextModel``) as an OpenCLIPTextEncoder padding like its tokenizer."""
    enc_dir = _need(what, folder, "text_encoder/config.json").parent
    config = hf_clip.config_from_transformers(json.loads((enc_dir / "config.json").read_text()))
    config = dataclasses.replace(config, pad_id=tokenizer_pad_id(folder, DEFAULT_PAD[what]))
    return hf_clip.text_from_transformers(read_foreign_checkpoint(_weights(what, enc_dir)), config).eval()


def _scheduler_json(folder: Path, sub: str) -> dict | None:
    path = folder / sub / "scheduler_config.json"
    return json.loads(path.read_text()) if path.exists() else None


def vsr_schedules(x4: Path) -> tuple[NoiseSchedule, SamplerConfig, NoiseSchedule]:
    """The VSR sampler as ``vsr/sample.py`` builds it from the x4 folder: (schedule, sampler, low-res schedule).

    ``DDIMScheduler.from_config(config)`` with ``config["beta_schedule"] = "linear"``: the betas run linearly
    from the config's ``beta_start`` to ``beta_end``; ``steps_offset`` and ``set_alpha_to_one`` set where the
    ladder starts and what the last step lands on.
    """
    preset = SamplerConfig.preset("lavie_vsr")
    cfg = _scheduler_json(x4, "scheduler")
    if cfg is None:
        schedule, sampler = NoiseSchedule("lavie_vsr"), preset
    else:
        schedule = NoiseSchedule(ScheduleConfig(
            num_train_timesteps=cfg.get("num_train_timesteps", 1000), beta_schedule="linear",
            beta_start=cfg.get("beta_start", 1e-4), beta_end=cfg.get("beta_end", 0.02),
            prediction_type=cfg.get("prediction_type", "epsilon")))
        # diffusers 0.16 (LaVie's pin) spaces DDIM steps "leading" whatever the config says (timestep_spacing
        # came later), then adds steps_offset
        sampler = dataclasses.replace(preset, spacing="leading", offset=int(cfg.get("steps_offset", 0)),
                                      final="one" if cfg.get("set_alpha_to_one", True) else "first")
    low = _scheduler_json(x4, "low_res_scheduler")
    if low is None:
        low_res = NoiseSchedule("lavie_vsr_low_res")
    else:
        low_res = NoiseSchedule(ScheduleConfig(
            num_train_timesteps=low.get("num_train_timesteps", 1000),
            beta_schedule=low.get("beta_schedule", "scaled_linear"), beta_start=low.get("beta_start", 1e-4),
            beta_end=low.get("beta_end", 0.02)))
    return schedule, sampler, low_res


def load_lavie_pipeline(
    root: str | Path | None = None,
    *,
    base: str | Path | None = None,
    interpolation: str | Path | None = None,
    vsr: str | Path | None = None,
    sd14: str | Path | None = None,
    x4: str | Path | None = None,
    stages: tuple[str, ...] | None = None,
    unet_configs: Mapping[str, UNetConfig | str] | None = None,
    dtype: torch.dtype = torch.float32,
    local_files_only: bool | None = None,
    cache_dir: str | Path | None = None,
) -> LaVieCascade:
    """LaVie's cascade from local files or the Hub; each stage is also usable alone (``cascade.base(...)``).

    Args:
        root: the official ``pretrained_models/`` folder; every file not given is looked for there
            under its official name (:data:`LAVIE_FILES`). ``None``: every file not given comes from
            the Hugging Face Hub or its cache (:func:`hub_file`).
        base, interpolation, vsr: the ``lavie_*.pt`` files. sd14, x4: the two diffusers folders.
        stages: which stages to build (default: all three with ``root`` or with no file given, else
            those whose U-Net is given).
        unet_configs: a :class:`UNetConfig` (or preset name) per stage instead of detecting the preset
            (tests load reduced-width files this way).
        dtype: the weights' dtype (the x4 VAE stays float32, as ``vsr/sample.py`` decodes in float32).
        local_files_only: Hub files from the cache only, never downloaded (``None``: follow ``HF_HUB_OFFLINE``).
        cache_dir: another Hugging Face cache folder (default: the shared one).

    Raises:
        CheckpointNotFoundError: a file is missing (the message names it, its repository and where it goes).
        vdlearn.io.CheckpointMismatchError: a file does not fit its model.
    """
    given = {"base": base, "interpolation": interpolation, "vsr": vsr, "sd14": sd14, "x4": x4}
    root = Path(root).expanduser() if root is not None else None
    paths = {k: Path(v).expanduser() if v is not None else (root / LAVIE_FILES[k][0] if root else None)
             for k, v in given.items()}
    if stages is None:
        nothing_given = root is None and all(v is None for v in given.values())
        stages = tuple(s for s in STAGES if root is not None or nothing_given or given[s] is not None)
    bad = [s for s in stages if s not in STAGES]
    if bad or not stages:
        raise ValueError(f"stages must be a non-empty selection of {STAGES}, got {stages}. Pass root=, a "
                         f"lavie_*.pt file (base=, interpolation=, vsr=) or nothing (every file from the Hub).")
    for need in {s: None for s in stages} | ({"sd14": None} if {"base", "interpolation"} & set(stages) else {}) \
            | ({"x4": None} if "vsr" in stages else {}):
        if paths[need] is None:  # neither given nor under root: the Hub (or its cache)
            paths[need] = hub_file(need, local_files_only=local_files_only, cache_dir=cache_dir)
        _need(need, paths[need])
    configs = dict(unet_configs or {})

    def unet(stage: str):
        return load_lavie_unet(paths[stage], configs.get(stage), dtype=dtype)

    built = {}
    if {"base", "interpolation"} & set(stages):
        text = load_text_encoder("sd14", paths["sd14"]).to(dtype)
        vae = load_vae("sd14", paths["sd14"], SD_SCALE).to(dtype)
        if "base" in stages:
            built["base"] = LaVieBasePipeline(unet("base"), vae, text, NoiseSchedule("lavie_base"))
        if "interpolation" in stages:
            built["interpolation"] = LaVieInterpolationPipeline(unet("interpolation"), vae, text,
                                                                NoiseSchedule("lavie_interpolation"))
    if "vsr" in stages:
        schedule, sampler, low_res = vsr_schedules(paths["x4"])
        built["vsr"] = LaVieVSRPipeline(unet("vsr"), load_vae("x4", paths["x4"], X4_SCALE),
                                        load_text_encoder("x4", paths["x4"]).to(dtype), schedule, low_res,
                                        sampler=sampler)
    return LaVieCascade(**built)


__all__ = ["HUB_PATTERNS", "LAVIE_FILES", "hub_file", "load_lavie_pipeline", "load_text_encoder", "load_vae", "missing_file_message",
           "tokenizer_pad_id", "vsr_schedules"]
