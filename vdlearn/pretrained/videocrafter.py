"""VideoCrafter1/2 checkpoints <-> vdlearn's :class:`~vdlearn.models.unet.VideoUNet`.

The official checkpoints (``AILab-CVC/VideoCrafter``; VideoCrafter1 arXiv 2310.19512,
VideoCrafter2 arXiv 2401.09047) store the U-Net under ``model.diffusion_model.`` with the
names of the original ``openaimodel3d.UNetModel``: numbered ``Sequential`` children
(``input_blocks.4.0.in_layers.2.weight``), a typo (``temopral_conv``) and one pair of
Conv1d weights (``init_attn.0.proj_in.weight [512, 320, 1]``). vdlearn names its modules
by what they are (``down_stages.3.res.conv1.weight``). This module translates both ways:

===================================  =============================================
vdlearn                              official
===================================  =============================================
``time_embed.linear_{1,2}``          ``time_embed.{0,2}``
``fps_embed.linear_{1,2}``           ``fps_embedding.{0,2}``
``conv_in``                          ``input_blocks.0.0``
``init_attn``                        ``init_attn.0`` (proj weights ``[o, i]`` <-> ``[o, i, 1]``)
``down_stages.i.{res,spatial,...}``  ``input_blocks.{i+1}.{k}`` (k counts the parts present)
``down_stages.i.resample.conv``      ``input_blocks.{i+1}.0.op``
``mid.{res1,spatial,temporal,res2}``  ``middle_block.{0,1,2,3}``
``up_stages.i.{...}``                ``output_blocks.i.{k}``; upsampler ``.conv``
``out_norm``, ``conv_out``           ``out.0``, ``out.2``
ResBlock ``norm1 conv1 emb_proj``    ``in_layers.0 in_layers.2 emb_layers.1``
ResBlock ``norm2 conv2 skip``        ``out_layers.0 out_layers.3 skip_connection``
``temporal_conv.norms.j / convs.j``  ``temopral_conv.conv{j+1}.0`` / ``.conv{j+1}.{2|3}``
transformer ``blocks.j``             ``transformer_blocks.j``
``ff.proj_in``, ``ff.proj_out``      ``ff.net.0.proj``, ``ff.net.2``
attention ``to_out``                 ``to_out.0``
``rel_pos_{k,v}.table``              ``relative_position_{k,v}.embeddings_table``
===================================  =============================================

Checkpoint files come in three layouts (``scripts/evaluation/funcs.py``): a DeepSpeed dict
``{"module": {"_forward_module.<name>": ...}}``, ``{"state_dict": {...}}``, or the raw dict;
:func:`load_videocrafter_unet` accepts all three. Full-size weights are downloaded only when
a user asks for them (notebook 10); this module never touches the network.

Taught in ``notebooks/04_temporal_unet.ipynb`` (layout) and ``notebooks/10_pretrained.ipynb``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from vdlearn.io import check_state_dict, read_foreign_checkpoint, unwrap_checkpoint
from vdlearn.models.unet.unet import UNetConfig, VideoUNet
from vdlearn.pretrained.naming import names_from_module_map

#: Prefix of the U-Net inside a full VideoCrafter checkpoint.
UNET_PREFIX = "model.diffusion_model."

# ResBlock internals: vdlearn -> official
_RESBLOCK_RULES = [
    (r"^norm1\.", "in_layers.0."),
    (r"^conv1\.", "in_layers.2."),
    (r"^emb_proj\.", "emb_layers.1."),
    (r"^norm2\.", "out_layers.0."),
    (r"^conv2\.", "out_layers.3."),
    (r"^skip\.", "skip_connection."),
]
# transformer internals: vdlearn -> official
_TRANSFORMER_RULES = [
    (r"^blocks\.(\d+)\.", r"transformer_blocks.\1."),
    (r"\.ff\.proj_in\.", ".ff.net.0.proj."),
    (r"\.ff\.proj_out\.", ".ff.net.2."),
    (r"\.to_out\.", ".to_out.0."),
    (r"\.rel_pos_([kv])\.table$", r".relative_position_\1.embeddings_table"),
]


def _temporal_conv_name(rest: str) -> str:
    """``temporal_conv.norms.j.*`` / ``temporal_conv.convs.j.*`` -> ``temopral_conv.conv{j+1}.{0|2|3}.*``."""
    m = re.match(r"^temporal_conv\.(norms|convs)\.(\d+)\.(.*)$", rest)
    j = int(m.group(2))
    index = 0 if m.group(1) == "norms" else (2 if j == 0 else 3)  # no dropout before the first conv
    return f"temopral_conv.conv{j + 1}.{index}.{m.group(3)}"  # sic: the official typo


def _rename_inside(kind: str, rest: str) -> str:
    if kind == "res":
        if rest.startswith("temporal_conv."):
            return _temporal_conv_name(rest)
        for pattern, repl in _RESBLOCK_RULES:
            if re.match(pattern, rest):
                return re.sub(pattern, repl, rest)
        raise KeyError(f"Unknown ResBlock parameter {rest!r}.")
    if kind == "transformer":
        if ".rel_bias." in rest:
            raise ValueError(
                "This model uses LaVie-style rotary + bucket-bias temporal attention (temporal_position="
                "'rope_bias'), which has no VideoCrafter counterpart."
            )
        for pattern, repl in _TRANSFORMER_RULES:
            rest = re.sub(pattern, repl, rest)
        return rest
    return rest  # plain modules (convs, norms, linears) keep their parameter names


def _module_map(model: VideoUNet) -> list[tuple[str, str, str]]:
    """``(vdlearn prefix, official prefix, kind)`` for every module that owns parameters."""
    pairs = [("time_embed.linear_1", "time_embed.0", "plain"), ("time_embed.linear_2", "time_embed.2", "plain"),
             ("conv_in", "input_blocks.0.0", "plain"), ("out_norm", "out.0", "plain"),
             ("conv_out", "out.2", "plain")]
    if model.fps_embed is not None:
        pairs += [("fps_embed.linear_1", "fps_embedding.0", "plain"), ("fps_embed.linear_2", "fps_embedding.2", "plain")]
    if model.init_attn is not None:
        pairs.append(("init_attn", "init_attn.0", "transformer"))
    kinds = {"res": "res", "res1": "res", "res2": "res", "spatial": "transformer", "temporal": "transformer"}

    def stage(prefix: str, official: str, module: nn.Module, parts: tuple[str, ...], resample_name: str):
        k = 0
        for part in parts:
            sub = getattr(module, part, None)
            if sub is None:
                continue
            if part == "resample":
                pairs.append((f"{prefix}.resample.conv", f"{official}.{k}.{resample_name}", "plain"))
            else:
                pairs.append((f"{prefix}.{part}", f"{official}.{k}", kinds[part]))
            k += 1

    for i, s in enumerate(model.down_stages):
        stage(f"down_stages.{i}", f"input_blocks.{i + 1}", s, ("res", "spatial", "temporal", "resample"), "op")
    stage("mid", "middle_block", model.mid, ("res1", "spatial", "temporal", "res2"), "")
    for i, s in enumerate(model.up_stages):
        stage(f"up_stages.{i}", f"output_blocks.{i}", s, ("res", "spatial", "temporal", "resample"), "conv")
    return pairs


def official_names(model: VideoUNet) -> dict[str, str]:
    """``{vdlearn name: official name}`` for every tensor of ``model``'s state dict (one-to-one)."""
    return names_from_module_map(model.state_dict(), _module_map(model),
                                 lambda kind, rest, name: _rename_inside(kind, rest), _no_official_name)


def _no_official_name(name: str) -> KeyError:
    return KeyError(f"No official name for {name!r}.")


def _is_conv1d_proj(official: str) -> bool:
    """``init_attn``'s projections are Conv1d (k=1) officially, Linear in vdlearn."""
    return official.startswith("init_attn.0.proj_") and official.endswith(".weight")


def to_official(model: VideoUNet, state_dict: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """vdlearn state dict (default: ``model``'s) -> official VideoCrafter U-Net names (no prefix)."""
    state_dict = model.state_dict() if state_dict is None else state_dict
    out = {}
    for ours, theirs in official_names(model).items():
        t = state_dict[ours]
        out[theirs] = t.unsqueeze(-1) if _is_conv1d_proj(theirs) else t
    return out


def official_shapes(model: VideoUNet) -> dict[str, tuple[int, ...]]:
    """``{official name: shape}`` that a checkpoint for ``model`` must contain."""
    return {k: tuple(v.shape) for k, v in to_official(model).items()}


class VideoCrafterUNetLayout(nn.Module):
    """A model's tensors under their official names (shapes only), for :func:`vdlearn.io.check_state_dict`."""

    def __init__(self, model: VideoUNet):
        super().__init__()
        self._shapes = official_shapes(model)

    def state_dict(self, *args, **kwargs):
        return {k: torch.empty(s, device="meta") for k, s in self._shapes.items()}


def from_official(
    state_dict: Mapping[str, torch.Tensor], model: VideoUNet, what: str = "VideoCrafter checkpoint"
) -> dict[str, torch.Tensor]:
    """Official U-Net state dict (no prefix) -> vdlearn names for ``model``.

    Raises :class:`vdlearn.io.CheckpointMismatchError` listing missing / unexpected official
    keys and shape mismatches if the checkpoint does not fit the model's config exactly.
    """
    layout = VideoCrafterUNetLayout(model)
    # the Conv1d weights may also come in Linear shape (e.g. from another converter)
    fixed = {k: (v.unsqueeze(-1) if _is_conv1d_proj(k) and v.ndim == 2 else v) for k, v in state_dict.items()}
    check_state_dict(layout, fixed, what)
    return {ours: (fixed[theirs].squeeze(-1) if _is_conv1d_proj(theirs) else fixed[theirs])
            for ours, theirs in official_names(model).items()}


# --- checkpoint files --------------------------------------------------------------------------
def extract_unet(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The U-Net tensors of a full checkpoint, ``model.diffusion_model.`` stripped.

    A dict that is already U-Net-only (no key has the prefix) is returned as is. The
    other parts (VAE, text encoder, schedule buffers, ``scale_arr``) are left out.
    """
    unet = {k[len(UNET_PREFIX):]: v for k, v in state_dict.items() if k.startswith(UNET_PREFIX)}
    return unet if unet else dict(state_dict)


def detect_preset(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Guess the vdlearn preset of an official U-Net state dict (prefix stripped) from its keys."""
    keys = list(state_dict)
    has = lambda s: any(s in k for k in keys)
    if has("to_k_ip"):
        return "videocrafter1_i2v_512"
    if has("relative_position_k"):
        return "videocrafter1_t2v_1024" if has("fps_embedding") else "videocrafter1_t2v_512"
    return "videocrafter2_t2v_512"


def load_videocrafter_unet(
    source: str | Path | Mapping,
    config: UNetConfig | str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> VideoUNet:
    """Build a :class:`VideoUNet` and load an official VideoCrafter checkpoint into it.

    Args:
        source: a ``.ckpt``/``.pt`` file (read with ``weights_only=True``), a
            ``.safetensors`` file, or an already loaded dict, in any of the three layouts
            (DeepSpeed / ``state_dict`` / raw); a full checkpoint or the U-Net alone.
        config: a :class:`UNetConfig`, a preset name, or None to detect the preset from the keys.
        device, dtype: where the weights end up (I2V ships in fp16; default float32).

    Raises:
        vdlearn.io.CheckpointMismatchError: the checkpoint does not fit the config; the
        message lists missing and unexpected official keys.
    """
    if isinstance(source, (str, Path)):
        state = read_foreign_checkpoint(source, hint="Download it first (notebook 10, full-size pretrained "
                                        "checkpoints, shows how), or pass a state dict.")
    else:
        state = unwrap_checkpoint(source)
    unet = extract_unet(state)
    if config is None:
        config = detect_preset(unet)
    if isinstance(config, str):
        config = UNetConfig.preset(config)
    with torch.device("meta"):  # no time or memory spent on a random initialisation
        model = VideoUNet(config)
    ours = from_official(unet, model, what="VideoCrafter checkpoint")
    ours = {k: v.to(device=device, dtype=dtype) for k, v in ours.items()}
    model.load_state_dict(ours, strict=True, assign=True)
    return model.eval()
