"""LaVie's base, interpolation and super-resolution checkpoints <-> vdlearn's :class:`~vdlearn.models.unet.VideoUNet`.

LaVie (Wang et al. 2023, arXiv 2309.15103; Vchitect/LaVie ``base/models/unet.py``,
``interpolation/models/unet.py``, ``vsr/models/unet.py``) builds its U-Nets from diffusers'
``UNet2DConditionModel`` of Stable Diffusion 1.4 (base, interpolation) and of the SD x4 upscaler
(VSR), so the checkpoints ``lavie_base.pt``, ``lavie_interpolation.pt`` and ``lavie_vsr.pt`` use
diffusers' names: blocks
grouped by level (``down_blocks.1.resnets.0.conv1.weight``), plus the temporal layer inside
every transformer block (``attn_temp``, ``norm_temp``). vdlearn names its modules by what they
are (``down_stages.3.res.conv1.weight``). This module translates both ways:

=======================================  ==============================================
vdlearn                                  official (diffusers / LaVie)
=======================================  ==============================================
``time_embed.linear_{1,2}``              ``time_embedding.linear_{1,2}``
``conv_in``, ``out_norm``, ``conv_out``  ``conv_in``, ``conv_norm_out``, ``conv_out``
``down_stages.k.{res,spatial}``          ``down_blocks.L.{resnets,attentions}.j``, ``(L, j) = divmod(k, N+1)``
``down_stages.k.resample.conv``          ``down_blocks.L.downsamplers.0.conv`` (``j == N``)
``mid.{res1,spatial,res2}``              ``mid_block.{resnets.0,attentions.0,resnets.1}``
``up_stages.k.{res,spatial}``            ``up_blocks.U.{resnets,attentions}.j``, ``(U, j) = divmod(k, N+1)``
``up_stages.k.resample.conv``            ``up_blocks.U.upsamplers.0.conv``
ResBlock ``emb_proj``, ``skip``          ``time_emb_proj``, ``conv_shortcut`` (the rest alike)
transformer ``blocks.j``                 ``transformer_blocks.j``
``ff.proj_in``, ``ff.proj_out``          ``ff.net.0.proj``, ``ff.net.2``
attention ``to_out``                     ``to_out.0``
``temporal.norm``, ``temporal.attn``     ``norm_temp``, ``attn_temp``
``rel_bias.embedding``                   ``time_rel_pos_bias.relative_attention_bias``
(computed, not stored)                   ``attn_temp.rotary_emb.freqs`` ``(16,)``
*VSR only:*
``noise_level_embed``                    ``class_embedding``
``temporal.norm``, ``temporal.attn``     ``norm_temporal``, ``attn_temporal``
transformer ``temporal_conv``            ``resblock_temporal``
``down_temporal_modules.L``              ``down_temporal_blocks.L`` (after level ``L``)
``mid_temporal_module``                  ``mid_temporal_block``
``up_temporal_modules.U``                ``up_temporal_blocks.U``
module ``temporal_res``, ``spatial_res``  ``resblocks_3d_t``, ``resblocks_3d_s`` (``emb_proj``: ``time_emb_proj``)
(computed, not stored)                   ``attn_temporal.rotary_emb.freqs``, ``temporal_rotary_emb.freqs``
=======================================  ==============================================

(``N`` is ``num_res_blocks``: a down level has ``N`` ResBlock stages and a downsampler stage, an
up level ``N+1`` ResBlock stages, the last one with the upsampler; ``up_blocks.0`` is the deepest.) The rotary frequencies are a frozen
parameter of ``rotary_embedding_torch`` in the official model, 16 copies of one shared
module (the VSR model also keeps the shared module itself, ``temporal_rotary_emb.freqs``: 17
copies); vdlearn computes them (:class:`~vdlearn.models.unet.positions.PartialRotaryEmbedding`),
so :func:`from_official` accepts them, checks them, and drops them. The official files are
``{"ema": state_dict}`` (LaVie's ``find_model`` unwraps ``["ema"]``); the other layouts of
:func:`vdlearn.io.unwrap_checkpoint` are accepted too. The VSR model's x4 upscaler VAE is not
covered here. Full-size weights are downloaded only when a user asks for them
(notebook 10); this module never touches the network.

Taught in ``notebooks/10_pretrained.ipynb``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from vdlearn.io import (
    CheckpointMismatchError,
    mismatch_error,
    read_foreign_checkpoint,
    unwrap_checkpoint,
)
from vdlearn.models.unet.positions import PartialRotaryEmbedding
from vdlearn.models.unet.transformer import BlockTemporalAttention
from vdlearn.models.unet.unet import UNetConfig, VideoUNet
from vdlearn.pretrained.naming import names_from_module_map

#: The presets whose layout this module converts.
LAVIE_PRESETS = ("lavie_base", "lavie_interpolation", "lavie_vsr")
#: The shared rotary module of the VSR U-Net, stored once more at the top level of its checkpoint.
VSR_SHARED_FREQS = "temporal_rotary_emb.freqs"

# ResBlock internals: vdlearn -> official (norm1, conv1, norm2, conv2 keep their names)
_RESBLOCK_RULES = [(r"^emb_proj\.", "time_emb_proj."), (r"^skip\.", "conv_shortcut.")]
# transformer internals: vdlearn -> official, applied in order (base and interpolation: attn_temp / norm_temp)
_TRANSFORMER_RULES = [
    (r"^blocks\.(\d+)\.", r"transformer_blocks.\1."),
    (r"\.temporal\.norm\.", ".norm_temp."),
    (r"\.temporal\.attn\.", ".attn_temp."),
    (r"\.rel_bias\.embedding\.", ".time_rel_pos_bias.relative_attention_bias."),
    (r"\.ff\.proj_in\.", ".ff.net.0.proj."),
    (r"\.ff\.proj_out\.", ".ff.net.2."),
    (r"\.to_out\.", ".to_out.0."),
]
# the VSR model names its in-block temporal layer attn_temporal / norm_temporal and opens every
# transformer with resblock_temporal
_VSR_TRANSFORMER_RULES = [
    (r"^temporal_conv\.", "resblock_temporal."),
    (r"\.temporal\.norm\.", ".norm_temporal."),
    (r"\.temporal\.attn\.", ".attn_temporal."),
] + [rule for rule in _TRANSFORMER_RULES if "temporal" not in rule[0]]
# the VSR temporal module after a level (official TemporalModule3D)
_LEVEL_TEMPORAL_RULES = [(r"^temporal_res\.", "resblocks_3d_t."), (r"^spatial_res\.", "resblocks_3d_s."),
                         (r"\.emb_proj\.", ".time_emb_proj.")]


def _not_lavie(name: str) -> ValueError:
    return ValueError(
        f"The vdlearn tensor {name!r} has no counterpart in LaVie's checkpoints: this model's config is not a "
        f"LaVie layout. Start from UNetConfig.preset('lavie_base'), ('lavie_interpolation') or ('lavie_vsr') "
        f"(widths may change)."
    )


def is_vsr_layout(config: UNetConfig) -> bool:
    """True for the VSR U-Net's layout (x4 upscaler, noise level, temporal modules), whose names differ."""
    return bool(config.noise_level_classes or config.transformer_temporal_conv or config.level_temporal_modules)


def _module_map(model: VideoUNet) -> list[tuple[str, str, str]]:
    """``(vdlearn prefix, official prefix, kind)`` for every module that owns parameters."""
    cfg = model.config
    tf = "vsr_transformer" if is_vsr_layout(cfg) else "transformer"
    pairs = [("time_embed.linear_1", "time_embedding.linear_1", "plain"),
             ("time_embed.linear_2", "time_embedding.linear_2", "plain"),
             ("conv_in", "conv_in", "plain"), ("out_norm", "conv_norm_out", "plain"), ("conv_out", "conv_out", "plain"),
             ("mid.res1", "mid_block.resnets.0", "res"), ("mid.spatial", "mid_block.attentions.0", tf),
             ("mid.res2", "mid_block.resnets.1", "res")]
    if model.noise_level_embed is not None:
        pairs.append(("noise_level_embed", "class_embedding", "plain"))
    if model.mid_temporal_module is not None:
        pairs.append(("mid_temporal_module", "mid_temporal_block", "level_temporal"))
    for name, official in (("down_temporal_modules", "down_temporal_blocks"), ("up_temporal_modules", "up_temporal_blocks")):
        for i in range(len(getattr(model, name) or ())):  # one per level, in the order they run
            pairs.append((f"{name}.{i}", f"{official}.{i}", "level_temporal"))
    n = cfg.num_res_blocks
    for k, stage in enumerate(model.down_stages):
        level, j = divmod(k, n + 1)
        block = f"down_blocks.{level}"
        if stage.resample is not None:
            pairs.append((f"down_stages.{k}.resample.conv", f"{block}.downsamplers.0.conv", "plain"))
        if stage.res is not None:
            pairs.append((f"down_stages.{k}.res", f"{block}.resnets.{j}", "res"))
        if stage.spatial is not None:
            pairs.append((f"down_stages.{k}.spatial", f"{block}.attentions.{j}", tf))
    for k, stage in enumerate(model.up_stages):
        level, j = divmod(k, n + 1)
        block = f"up_blocks.{level}"
        pairs.append((f"up_stages.{k}.res", f"{block}.resnets.{j}", "res"))
        if stage.spatial is not None:
            pairs.append((f"up_stages.{k}.spatial", f"{block}.attentions.{j}", tf))
        if stage.resample is not None:
            pairs.append((f"up_stages.{k}.resample.conv", f"{block}.upsamplers.0.conv", "plain"))
    return pairs


def _rename_inside(kind: str, rest: str, name: str) -> str:
    if kind == "res":
        if rest.startswith("temporal_conv."):
            raise _not_lavie(name)
        for pattern, repl in _RESBLOCK_RULES:
            rest = re.sub(pattern, repl, rest)
        return rest
    if kind in ("transformer", "vsr_transformer"):
        vsr = kind == "vsr_transformer"
        allowed = r"^(norm|proj_in|proj_out|temporal_conv)\." if vsr else r"^(norm|proj_in|proj_out)\."
        if not rest.startswith("blocks.") and not re.match(allowed, rest):
            raise _not_lavie(name)
        if re.search(r"\.(rel_pos_[kv]|to_[kv]_ip)\.", rest):  # VideoCrafter's Shaw tables, image attention
            raise _not_lavie(name)
        for pattern, repl in _VSR_TRANSFORMER_RULES if vsr else _TRANSFORMER_RULES:
            rest = re.sub(pattern, repl, rest)
        return rest
    if kind == "level_temporal":
        for pattern, repl in _LEVEL_TEMPORAL_RULES:
            rest = re.sub(pattern, repl, rest)
        return rest
    return rest  # plain modules (convs, norms, linears) keep their parameter names


def official_names(model: VideoUNet) -> dict[str, str]:
    """``{vdlearn name: official name}`` for every tensor of ``model``'s state dict (one-to-one)."""
    # unmapped: init_attn, temporal transformers, the fps embedding, ...
    return names_from_module_map(model.state_dict(), _module_map(model), _rename_inside, _not_lavie)


def rotary_frequencies(model: VideoUNet) -> dict[str, torch.Tensor]:
    """``{official name: frequencies}`` of every ``rotary_emb.freqs`` the official model holds.

    One per in-block temporal attention with rotary positions (LaVie base: 16 ``attn_temp``,
    interpolation: 0, VSR: 16 ``attn_temporal`` plus the shared module's own ``temporal_rotary_emb.freqs``),
    each ``theta^(-2p/32)`` for ``p < 16``.
    """
    rotary = {name: module.attn.rotary for name, module in model.named_modules()
              if isinstance(module, BlockTemporalAttention)
              and isinstance(getattr(module.attn, "rotary", None), PartialRotaryEmbedding)}
    if not rotary:
        return {}
    official = official_names(model)
    vsr = is_vsr_layout(model.config)
    norm, attn = ("norm_temporal", "attn_temporal") if vsr else ("norm_temp", "attn_temp")
    out = {}
    for name, rope in rotary.items():
        norm_name = official[f"{name}.norm.weight"]  # <...>.transformer_blocks.j.norm_temp.weight
        out[norm_name.removesuffix(f"{norm}.weight") + f"{attn}.rotary_emb.freqs"] = rope.frequencies()  # (d/2,)
    if vsr:  # the shared RotaryEmbedding(32), registered on the U-Net itself too
        out[VSR_SHARED_FREQS] = PartialRotaryEmbedding(model.config.rotary_dim).frequencies()  # (16,)
    return out


def to_official(model: VideoUNet, state_dict: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """vdlearn state dict (default: ``model``'s) -> LaVie's official names, rotary frequencies included."""
    state_dict = model.state_dict() if state_dict is None else state_dict
    out = {theirs: state_dict[ours] for ours, theirs in official_names(model).items()}
    return out | rotary_frequencies(model)


def official_shapes(model: VideoUNet) -> dict[str, tuple[int, ...]]:
    """``{official name: shape}`` of every tensor a LaVie checkpoint for ``model`` holds (no weights read)."""
    own = model.state_dict()
    shapes = {theirs: tuple(own[ours].shape) for ours, theirs in official_names(model).items()}
    return shapes | {k: tuple(v.shape) for k, v in rotary_frequencies(model).items()}


def unwrap_lavie_checkpoint(obj) -> dict[str, torch.Tensor]:
    """The flat state dict of a LaVie file: ``obj["ema"]`` if present (the released files), else
    any layout :func:`vdlearn.io.unwrap_checkpoint` reads (raw, ``state_dict``, DeepSpeed)."""
    if isinstance(obj, Mapping) and isinstance(obj.get("ema"), Mapping):
        obj = obj["ema"]
    return unwrap_checkpoint(obj)


def from_official(
    state_dict: Mapping[str, torch.Tensor], model: VideoUNet, what: str = "LaVie checkpoint"
) -> dict[str, torch.Tensor]:
    """An official LaVie U-Net state dict (``{"ema": ...}`` or flat) -> vdlearn names for ``model``.

    The ``rotary_emb.freqs`` entries may be present or absent; present, they must be the
    frequencies vdlearn computes, and they are dropped.

    Raises:
        vdlearn.io.CheckpointMismatchError: the checkpoint does not fit the model's config; one
        message lists the missing and unexpected official keys and the shape mismatches.
    """
    state = unwrap_lavie_checkpoint(state_dict)
    expected = official_shapes(model)
    frequencies = rotary_frequencies(model)
    missing = [k for k in expected if k not in state and k not in frequencies]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: model {expected[k]} vs checkpoint {tuple(state[k].shape)}"
              for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or shapes:
        raise mismatch_error(
            f"The {what} does not match {type(model).__name__} ({model.config.model_channels} channels, "
            f"concat_channels={model.config.concat_channels}).", missing, unexpected, shapes,
            hint="Check that the checkpoint and the model config belong together: lavie_base.pt goes with the "
                 "preset 'lavie_base', lavie_interpolation.pt with 'lavie_interpolation', lavie_vsr.pt with "
                 "'lavie_vsr'.")
    wrong = [k for k, f in frequencies.items() if k in state and not torch.allclose(state[k].float(), f, rtol=1e-5)]
    if wrong:
        raise CheckpointMismatchError(
            f"The {what} holds rotary frequencies that are not theta^(-2p/d) (theta 10000), so vdlearn, which "
            f"computes them, would run a different model: {wrong[:3]}{' ...' if len(wrong) > 3 else ''}.")
    return {ours: state[theirs] for ours, theirs in official_names(model).items()}


def detect_preset(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``"lavie_base"``, ``"lavie_interpolation"`` or ``"lavie_vsr"`` from an official state dict's keys and ``conv_in``."""
    state = unwrap_lavie_checkpoint(state_dict)
    if "conv_in.weight" not in state:
        raise CheckpointMismatchError("This is not a LaVie U-Net state dict: it has no 'conv_in.weight'.")
    channels = state["conv_in.weight"].shape[1]
    if "class_embedding.weight" in state or channels == 7:  # x4 upscaler U-Net: latent + low-res RGB, noise level
        if channels != 7 or "class_embedding.weight" not in state:
            raise CheckpointMismatchError(
                f"This looks like LaVie's VSR model but is not one: it needs conv_in with 7 input channels (4 latent "
                f"+ 3 low-res RGB; got {channels}) and a class_embedding (the noise level; "
                f"{'present' if 'class_embedding.weight' in state else 'absent'}).")
        return "lavie_vsr"
    if channels == 8:
        return "lavie_interpolation"
    if channels == 4:
        return "lavie_base"
    raise CheckpointMismatchError(f"conv_in takes {channels} channels; LaVie's base U-Net takes 4, its "
                                  f"interpolation U-Net 8 (noisy latent + conditioning latent) and its VSR U-Net 7.")


def load_lavie_unet(
    source: str | Path | Mapping,
    config: UNetConfig | str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> VideoUNet:
    """Build a :class:`VideoUNet` and load an official LaVie checkpoint into it.

    Args:
        source: ``lavie_base.pt`` / ``lavie_interpolation.pt`` / ``lavie_vsr.pt`` (read with ``weights_only=True``),
            a ``.safetensors`` file with official names, or an already loaded dict.
        config: a :class:`UNetConfig`, a preset name, or None to detect the preset.
        device, dtype: where the weights end up (the files are float32).

    Raises:
        vdlearn.io.CheckpointMismatchError: the checkpoint does not fit the config.
    """
    if isinstance(source, (str, Path)):
        state = read_foreign_checkpoint(source, hint=(
            "LaVie's U-Nets are lavie_base.pt, lavie_interpolation.pt and lavie_vsr.pt in the Hugging Face "
            "repository Vchitect/LaVie (https://huggingface.co/Vchitect/LaVie); on a machine with internet "
            "access: `huggingface-cli download Vchitect/LaVie lavie_base.pt --local-dir pretrained_models`, "
            "then pass pretrained_models/lavie_base.pt (notebook 10), or pass a state dict."))
    else:
        state = source
    state = unwrap_lavie_checkpoint(state)
    if config is None:
        config = detect_preset(state)
    if isinstance(config, str):
        config = UNetConfig.preset(config)
    with torch.device("meta"):  # no time or memory spent on a random initialisation
        model = VideoUNet(config)
    ours = from_official(state, model)
    model.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in ours.items()}, strict=True, assign=True)
    return model.eval()
