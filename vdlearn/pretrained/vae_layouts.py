"""Official autoencoder weights in vdlearn's modules: key layouts and converters.

The same numbers are published under two naming schemes, and vdlearn has a third,
written to be read:

============================  =====================================  =========================================
vdlearn                       original LDM (``first_stage_model.``)  diffusers ``AutoencoderKL``
============================  =====================================  =========================================
encoder.down.{i}.res.{j}      encoder.down.{i}.block.{j}             encoder.down_blocks.{i}.resnets.{j}
...res.{j}.skip               ...block.{j}.nin_shortcut              ...resnets.{j}.conv_shortcut
encoder.down.{i}.downsample   encoder.down.{i}.downsample            encoder.down_blocks.{i}.downsamplers.0
encoder.mid.res1 / res2       encoder.mid.block_1 / block_2          encoder.mid_block.resnets.0 / 1
encoder.mid.attn.to_q         encoder.mid.attn_1.q (1x1 conv)        encoder.mid_block.attentions.0.to_q
encoder.mid.attn.to_out       encoder.mid.attn_1.proj_out            encoder.mid_block.attentions.0.to_out.0
encoder.mid.attn.norm         encoder.mid.attn_1.norm                encoder.mid_block.attentions.0.group_norm
encoder.norm_out              encoder.norm_out                       encoder.conv_norm_out
decoder.up.{k}                decoder.up.{L-1-k} (by resolution!)    decoder.up_blocks.{k} (order of use)
decoder.up.{k}.upsample       decoder.up.{L-1-k}.upsample            decoder.up_blocks.{k}.upsamplers.0
============================  =====================================  =========================================

Two traps: the original code numbers decoder levels by resolution (``up.3`` runs
first in SD), and it stores the mid-block attention projections as 1x1 conv weights
``[c, c, 1, 1]`` where diffusers and vdlearn use Linear weights ``[c, c]``.

Every converter maps *every* key: a key it cannot place, or a module the checkpoint
does not fill, raises :class:`~vdlearn.io.CheckpointMismatchError` listing them.
The official names were checked against the VideoCrafter2 checkpoint manifest
(``tests/fixtures/keys/vae_ldm_first_stage.txt``). Taught in ``notebooks/02_latent_space.ipynb``
(and ``10_pretrained``); the models are LDM's KL-f8 (Rombach et al. 2022, appendix G).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vdlearn.io import (
    CheckpointMismatchError,
    check_state_dict,
    mismatch_error,
    read_foreign_checkpoint,
    unwrap_checkpoint,
)
from vdlearn.models.vae.autoencoder import AutoencoderKL
from vdlearn.models.vae.config import VAEConfig

#: The three layouts a converter speaks.
LAYOUTS = ("vdlearn", "ldm", "diffusers")

#: Prefix of the autoencoder inside VideoCrafter / Stable Diffusion (LDM) checkpoints.
LDM_PREFIX = "first_stage_model."

#: Keys of original LDM autoencoder checkpoints that are not part of the model
#: (the training loss: LPIPS network, discriminator, learned log-variance; EMA bookkeeping).
LDM_IGNORED_PREFIXES = ("loss.", "model_ema.")


@dataclass(frozen=True)
class ModuleNames:
    """One module (with a ``weight`` and a ``bias``) under its three names."""

    vdlearn: str
    ldm: str
    diffusers: str
    conv1x1_in_ldm: bool = False  # LDM stores this Linear as a 1x1 conv weight [c, c, 1, 1]

    def name(self, layout: str) -> str:
        return getattr(self, layout)


def _resnet(vd: str, ldm: str, df: str, has_skip: bool) -> list[ModuleNames]:
    parts = [("norm1",) * 3, ("conv1",) * 3, ("norm2",) * 3, ("conv2",) * 3]
    if has_skip:
        parts.append(("skip", "nin_shortcut", "conv_shortcut"))
    return [ModuleNames(f"{vd}.{a}", f"{ldm}.{b}", f"{df}.{c}") for a, b, c in parts]


def _mid(vd: str, ldm: str, df: str, attention: bool) -> list[ModuleNames]:
    out = _resnet(f"{vd}.res1", f"{ldm}.block_1", f"{df}.resnets.0", False)
    if attention:
        a_vd, a_ldm, a_df = f"{vd}.attn", f"{ldm}.attn_1", f"{df}.attentions.0"
        out.append(ModuleNames(f"{a_vd}.norm", f"{a_ldm}.norm", f"{a_df}.group_norm"))
        for mine, theirs, diff in [("to_q", "q", "to_q"), ("to_k", "k", "to_k"), ("to_v", "v", "to_v"),
                                   ("to_out", "proj_out", "to_out.0")]:
            out.append(ModuleNames(f"{a_vd}.{mine}", f"{a_ldm}.{theirs}", f"{a_df}.{diff}", conv1x1_in_ldm=True))
    out += _resnet(f"{vd}.res2", f"{ldm}.block_2", f"{df}.resnets.1", False)
    return out


def module_table(cfg: VAEConfig) -> list[ModuleNames]:
    """Every module of the (per-frame) autoencoder of ``cfg``, under its three names."""
    if cfg.temporal_decoder:
        raise ValueError("Official layouts hold per-frame autoencoders only; convert vae.per_frame() instead.")
    widths = [cfg.base_channels * m for m in cfg.channel_mult]
    levels = len(widths)
    table: list[ModuleNames] = [ModuleNames("encoder.conv_in", "encoder.conv_in", "encoder.conv_in")]

    in_width = cfg.base_channels
    for i, width in enumerate(widths):
        for j in range(cfg.num_res_blocks):
            table += _resnet(f"encoder.down.{i}.res.{j}", f"encoder.down.{i}.block.{j}",
                             f"encoder.down_blocks.{i}.resnets.{j}", has_skip=in_width != width)
            in_width = width
        if i != levels - 1:
            table.append(ModuleNames(f"encoder.down.{i}.downsample.conv", f"encoder.down.{i}.downsample.conv",
                                     f"encoder.down_blocks.{i}.downsamplers.0.conv"))
    table += _mid("encoder.mid", "encoder.mid", "encoder.mid_block", cfg.mid_attention)
    table += [ModuleNames("encoder.norm_out", "encoder.norm_out", "encoder.conv_norm_out"),
              ModuleNames("encoder.conv_out", "encoder.conv_out", "encoder.conv_out"),
              ModuleNames("quant_conv", "quant_conv", "quant_conv"),
              ModuleNames("post_quant_conv", "post_quant_conv", "post_quant_conv"),
              ModuleNames("decoder.conv_in", "decoder.conv_in", "decoder.conv_in")]
    table += _mid("decoder.mid", "decoder.mid", "decoder.mid_block", cfg.mid_attention)

    in_width = widths[-1]
    for k in range(levels):  # k: order of use; the original numbers the same level L-1-k
        i = levels - 1 - k
        for j in range(cfg.num_res_blocks + 1):
            table += _resnet(f"decoder.up.{k}.res.{j}", f"decoder.up.{i}.block.{j}",
                             f"decoder.up_blocks.{k}.resnets.{j}", has_skip=in_width != widths[i])
            in_width = widths[i]
        if i != 0:
            table.append(ModuleNames(f"decoder.up.{k}.upsample.conv", f"decoder.up.{i}.upsample.conv",
                                     f"decoder.up_blocks.{k}.upsamplers.0.conv"))
    table += [ModuleNames("decoder.norm_out", "decoder.norm_out", "decoder.conv_norm_out"),
              ModuleNames("decoder.conv_out", "decoder.conv_out", "decoder.conv_out")]
    return table


def key_table(cfg: VAEConfig) -> list[tuple[str, str, str, bool]]:
    """``(vdlearn_key, ldm_key, diffusers_key, conv1x1_in_ldm)`` for every tensor."""
    return [
        (f"{m.vdlearn}.{p}", f"{m.ldm}.{p}", f"{m.diffusers}.{p}", m.conv1x1_in_ldm and p == "weight")
        for m in module_table(cfg)
        for p in ("weight", "bias")
    ]


def _mismatch(what: str, missing: list[str], unexpected: list[str], limit: int = 20) -> CheckpointMismatchError:
    return mismatch_error(
        f"The {what} does not match the autoencoder layout.", missing, unexpected, limit=limit,
        hint="Check that the checkpoint is a KL autoencoder of this preset (e.g. 'sd' for VideoCrafter, "
        "LaVie and Stable Diffusion) and that it is complete.",
    )


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], cfg: VAEConfig, source: str, target: str
) -> dict[str, torch.Tensor]:
    """Rename (and reshape) every tensor from one layout to another; all keys must map.

    ``source`` and ``target`` are any of :data:`LAYOUTS`. Raises
    :class:`~vdlearn.io.CheckpointMismatchError` listing missing and unexpected keys.
    """
    for layout in (source, target):
        if layout not in LAYOUTS:
            raise ValueError(f"Unknown layout {layout!r}; expected one of {LAYOUTS}.")
    col = {name: i for i, name in enumerate(LAYOUTS)}
    table = key_table(cfg)
    by_source = {row[col[source]]: row for row in table}
    missing = [k for k in by_source if k not in state_dict]
    unexpected = [k for k in state_dict if k not in by_source]
    if missing or unexpected:
        raise _mismatch(f"{source}-layout state dict", missing, unexpected)

    out: dict[str, torch.Tensor] = {}
    for key, row in by_source.items():
        tensor = state_dict[key]
        if row[3]:  # attention projection: [c, c, 1, 1] in LDM, [c, c] elsewhere
            tensor = tensor.reshape(tensor.shape[0], tensor.shape[1])
            if target == "ldm":
                tensor = tensor[:, :, None, None]
        out[row[col[target]]] = tensor
    return out


def ldm_to_vdlearn(state_dict: Mapping[str, torch.Tensor], cfg: VAEConfig) -> dict[str, torch.Tensor]:
    """Original LDM autoencoder keys (``first_stage_model.`` already stripped) -> vdlearn keys."""
    return convert_state_dict(state_dict, cfg, "ldm", "vdlearn")


def vdlearn_to_ldm(state_dict: Mapping[str, torch.Tensor], cfg: VAEConfig, prefix: str = "") -> dict[str, torch.Tensor]:
    """vdlearn keys -> original LDM keys (add ``prefix=LDM_PREFIX`` to embed in a full checkpoint)."""
    return {prefix + k: v for k, v in convert_state_dict(state_dict, cfg, "vdlearn", "ldm").items()}


def diffusers_to_vdlearn(state_dict: Mapping[str, torch.Tensor], cfg: VAEConfig) -> dict[str, torch.Tensor]:
    """diffusers ``AutoencoderKL`` keys -> vdlearn keys."""
    return convert_state_dict(state_dict, cfg, "diffusers", "vdlearn")


def vdlearn_to_diffusers(state_dict: Mapping[str, torch.Tensor], cfg: VAEConfig) -> dict[str, torch.Tensor]:
    """vdlearn keys -> diffusers ``AutoencoderKL`` keys."""
    return convert_state_dict(state_dict, cfg, "vdlearn", "diffusers")


# --------------------------------------------------------------------------- whole checkpoints
def extract_first_stage(state_dict: Mapping[str, torch.Tensor], prefix: str = LDM_PREFIX) -> dict[str, torch.Tensor]:
    """The autoencoder's tensors, prefix stripped.

    From a full VideoCrafter / SD checkpoint: the keys under ``prefix`` (the UNet, text
    encoder and schedule buffers are left alone). From a stand-alone LDM autoencoder
    checkpoint: every key, minus the training-loss keys (:data:`LDM_IGNORED_PREFIXES`).
    """
    inside = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if inside:
        return inside
    return {k: v for k, v in state_dict.items() if not k.startswith(LDM_IGNORED_PREFIXES)}


def _model_from_state(cfg: VAEConfig, state: Mapping[str, torch.Tensor], what: str) -> AutoencoderKL:
    """Build the model without random initialisation (on the meta device) and adopt ``state``'s tensors."""
    with torch.device("meta"):
        vae = AutoencoderKL(cfg)
    check_state_dict(vae, state, what)
    vae.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    return vae


def load_ldm_vae(
    source: str | Path | Mapping[str, torch.Tensor],
    preset: str | VAEConfig = "videocrafter",
    device: str | torch.device = "cpu",
) -> AutoencoderKL:
    """A vdlearn :class:`AutoencoderKL` from an original LDM-layout checkpoint.

    ``source``: a VideoCrafter / Stable Diffusion checkpoint (``.ckpt``/``.pt``/``.safetensors``,
    loaded with ``weights_only=True``), a stand-alone LDM autoencoder checkpoint, or a state dict.
    Every autoencoder key must map (an error lists missing and unexpected keys).
    """
    cfg = preset if isinstance(preset, VAEConfig) else VAEConfig.preset(preset)
    state = unwrap_checkpoint(source) if isinstance(source, Mapping) else read_foreign_checkpoint(source)
    vae = _model_from_state(cfg, ldm_to_vdlearn(extract_first_stage(state), cfg), "LDM autoencoder checkpoint")
    return vae.to(device).eval()


def config_from_diffusers(dconfig: Mapping[str, Any], name: str = "diffusers") -> VAEConfig:
    """The :class:`VAEConfig` of a diffusers ``AutoencoderKL`` config (SD-style autoencoders only)."""
    boc = list(dconfig["block_out_channels"])
    base = boc[0]
    unsupported = []
    if any(b % base for b in boc):
        unsupported.append(f"block_out_channels {boc} are not multiples of the first")
    if any(t != "DownEncoderBlock2D" for t in dconfig.get("down_block_types", ())):
        unsupported.append(f"down_block_types {dconfig.get('down_block_types')} (attention inside levels)")
    if any(t != "UpDecoderBlock2D" for t in dconfig.get("up_block_types", ())):
        unsupported.append(f"up_block_types {dconfig.get('up_block_types')}")
    if dconfig.get("act_fn", "silu") != "silu":
        unsupported.append(f"act_fn {dconfig.get('act_fn')}")
    if not dconfig.get("use_quant_conv", True) or not dconfig.get("use_post_quant_conv", True):
        unsupported.append("no quant_conv / post_quant_conv")
    if dconfig.get("shift_factor") not in (None, 0, 0.0):
        unsupported.append(f"shift_factor {dconfig.get('shift_factor')}")
    if unsupported:
        raise ValueError("This diffusers autoencoder differs from the LDM KL design vdlearn implements: "
                         + "; ".join(unsupported) + ".")
    return VAEConfig(
        name=name,
        in_channels=dconfig.get("in_channels", 3),
        out_channels=dconfig.get("out_channels", 3),
        base_channels=base,
        channel_mult=tuple(b // base for b in boc),
        num_res_blocks=dconfig.get("layers_per_block", 2),
        mid_attention=dconfig.get("mid_block_add_attention", True),
        z_channels=dconfig.get("latent_channels", 4),
        double_z=True,
        norm_groups=dconfig.get("norm_num_groups", 32),
        norm_eps=1e-6,
        scale_factor=float(dconfig.get("scaling_factor", 0.18215)),
        resolution=None,
    )


def diffusers_kwargs(cfg: VAEConfig) -> dict[str, Any]:
    """Arguments that build the matching diffusers ``AutoencoderKL`` (for export and tests)."""
    levels = len(cfg.channel_mult)
    return {
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "down_block_types": ("DownEncoderBlock2D",) * levels,
        "up_block_types": ("UpDecoderBlock2D",) * levels,
        "block_out_channels": tuple(cfg.base_channels * m for m in cfg.channel_mult),
        "layers_per_block": cfg.num_res_blocks,
        "latent_channels": cfg.z_channels,
        "norm_num_groups": cfg.norm_groups,
        "scaling_factor": cfg.scale_factor,
        "mid_block_add_attention": cfg.mid_attention,
    }


def load_diffusers_vae(
    source: Any, subfolder: str | None = None, device: str | torch.device = "cpu", **from_pretrained_kwargs: Any
) -> AutoencoderKL:
    """A vdlearn :class:`AutoencoderKL` from a diffusers autoencoder.

    ``source``: a ``diffusers.AutoencoderKL`` instance, a local folder written by
    ``save_pretrained``, or a Hub id such as ``"stabilityai/sd-vae-ft-mse"`` (downloaded
    by diffusers, only when you ask; e.g. ``subfolder="vae"`` for a full pipeline repo).
    """
    import diffusers

    if isinstance(source, diffusers.AutoencoderKL):
        model = source
    else:
        model = diffusers.AutoencoderKL.from_pretrained(source, subfolder=subfolder, **from_pretrained_kwargs)
    cfg = config_from_diffusers(dict(model.config))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    vae = _model_from_state(cfg, diffusers_to_vdlearn(state, cfg), "diffusers autoencoder")
    return vae.to(device).eval()


def to_diffusers(vae: AutoencoderKL) -> Any:
    """Export a vdlearn autoencoder (per-frame part) as a ``diffusers.AutoencoderKL``."""
    import diffusers

    if vae.is_temporal:
        vae = vae.per_frame()
    model = diffusers.AutoencoderKL(**diffusers_kwargs(vae.config))
    model.load_state_dict(vdlearn_to_diffusers(vae.state_dict(), vae.config), strict=True)
    return model


def layout_of(keys: Iterable[str]) -> str:
    """Guess the layout of a set of autoencoder keys (``vdlearn``, ``ldm`` or ``diffusers``)."""
    keys = list(keys)
    if any(".down_blocks." in k or ".mid_block." in k for k in keys):
        return "diffusers"
    if any(".block." in k or ".block_1." in k for k in keys):
        return "ldm"
    if any(".res." in k or ".res1." in k for k in keys):
        return "vdlearn"
    raise ValueError("Cannot tell the layout of these keys: no known encoder/decoder block names.")


__all__ = [
    "LAYOUTS",
    "LDM_PREFIX",
    "ModuleNames",
    "config_from_diffusers",
    "convert_state_dict",
    "diffusers_kwargs",
    "diffusers_to_vdlearn",
    "extract_first_stage",
    "key_table",
    "layout_of",
    "ldm_to_vdlearn",
    "load_diffusers_vae",
    "load_ldm_vae",
    "module_table",
    "to_diffusers",
    "unwrap_checkpoint",
    "vdlearn_to_diffusers",
    "vdlearn_to_ldm",
]
