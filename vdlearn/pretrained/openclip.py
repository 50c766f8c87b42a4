"""VideoCrafter's encoders in the official checkpoints <-> vdlearn's CLIP towers and Resampler.

A VideoCrafter checkpoint (``AILab-CVC/VideoCrafter``, ``lvdm/models/ddpm3d.py``) carries
its encoders next to the U-Net, under the names of the modules that held them:

* ``cond_stage_model.model.*``: the OpenCLIP ViT-H/14 model of ``FrozenOpenCLIPEmbedder``
  with its ``visual`` tower deleted, i.e. the text tower (every T2V and I2V checkpoint);
* ``embedder.model.*`` (I2V): the OpenCLIP model of ``FrozenOpenCLIPImageEmbedderV2`` with
  its text ``transformer`` deleted: the whole ``visual`` tower plus the text tower's
  leftovers (``del model.transformer`` keeps ``token_embedding``, ``positional_embedding``,
  ``ln_final``, ``text_projection``, ``logit_scale``);
* ``image_proj_model.*`` (I2V): the ``Resampler`` of ``lvdm/modules/encoders/ip_resampler.py``.

The names translate as follows (``N`` a block index)::

    official (after the prefix)                vdlearn
    token_embedding.weight                     token_embed.weight
    positional_embedding                       pos_embed
    ln_final.{weight,bias}                     final_norm.*
    transformer.resblocks.N.ln_1 / ln_2        blocks.N.norm1 / norm2
    transformer.resblocks.N.attn.in_proj_*     blocks.N.attn.qkv.*      (fused q, k, v)
    transformer.resblocks.N.attn.out_proj      blocks.N.attn.out
    transformer.resblocks.N.mlp.c_fc / c_proj  blocks.N.mlp.fc1 / fc2
    visual.conv1.weight                        patch_embed.weight
    visual.class_embedding                     class_embed
    visual.positional_embedding                pos_embed
    visual.ln_pre                              norm_pre
    visual.transformer.resblocks.N.*           blocks.N.*               (as above)
    latents                                    queries
    layers.i.0.norm1 / norm2                   layers.i.attn.norm_image / norm_queries
    layers.i.0.{to_q,to_kv,to_out}             layers.i.attn.*
    layers.i.1.{0,1,3}                         layers.i.ff.{norm,fc1,fc2}
    proj_in, proj_out, norm_out                the same

Some official tensors are never used by the video models: CLIP's contrastive heads
(``text_projection``, ``logit_scale``, ``visual.ln_post``, ``visual.proj``) and the image
embedder's text leftovers. vdlearn's modules do not hold them; the converters accept them
(their shapes are checked when present) and drop them. Everything else must match
exactly: one :class:`~vdlearn.io.CheckpointMismatchError` lists every missing, unexpected
and wrong-shape key. Without an explicit config, the geometry (width, blocks, vocabulary,
queries, ...) is read from the tensor shapes; the head counts cannot be, and follow the
ViT-H/14 convention (text heads of 64 channels, image heads of 80, Resampler heads of 64).

The I2V checkpoint is stored in fp16; the weights are copied into the (fp32) module.
Taught in notebook 10_pretrained.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping

import torch
from torch import nn

from vdlearn.io import mismatch_error, unwrap_checkpoint
from vdlearn.models.clip import (
    OpenCLIPImageConfig,
    OpenCLIPImageEncoder,
    OpenCLIPTextConfig,
    OpenCLIPTextEncoder,
)
from vdlearn.models.resampler import Resampler, ResamplerConfig
from vdlearn.pretrained.naming import rename_checked

TEXT_PREFIX = "cond_stage_model.model."
IMAGE_PREFIX = "embedder.model."
RESAMPLER_PREFIX = "image_proj_model."

# one transformer block: official -> vdlearn (OpenCLIP's ResidualAttentionBlock names)
_BLOCK = {
    "ln_1.weight": "norm1.weight", "ln_1.bias": "norm1.bias",
    "attn.in_proj_weight": "attn.qkv.weight", "attn.in_proj_bias": "attn.qkv.bias",
    "attn.out_proj.weight": "attn.out.weight", "attn.out_proj.bias": "attn.out.bias",
    "ln_2.weight": "norm2.weight", "ln_2.bias": "norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight", "mlp.c_proj.bias": "mlp.fc2.bias",
}


def _blocks(official: str, layers: int) -> dict[str, str]:
    return {f"{official}{i}.{k}": f"blocks.{i}.{v}" for i in range(layers) for k, v in _BLOCK.items()}


# ----------------------------------------------------------------------------- name maps
def text_names(config: OpenCLIPTextConfig) -> dict[str, str]:
    """Official text-tower name (after the prefix) -> vdlearn name, for every tensor the module holds."""
    return {"token_embedding.weight": "token_embed.weight", "positional_embedding": "pos_embed",
            **_blocks("transformer.resblocks.", config.layers),
            "ln_final.weight": "final_norm.weight", "ln_final.bias": "final_norm.bias"}


def text_unused_shapes(config: OpenCLIPTextConfig) -> dict[str, tuple[int, ...]]:
    """The text tower's official tensors that vdlearn drops: CLIP's contrastive head."""
    return {"text_projection": (config.width, config.projection_dim), "logit_scale": ()}


def image_names(config: OpenCLIPImageConfig) -> dict[str, str]:
    """Official image-embedder name (after ``embedder.model.``) -> vdlearn name."""
    return {"visual.conv1.weight": "patch_embed.weight", "visual.class_embedding": "class_embed",
            "visual.positional_embedding": "pos_embed",
            "visual.ln_pre.weight": "norm_pre.weight", "visual.ln_pre.bias": "norm_pre.bias",
            **_blocks("visual.transformer.resblocks.", config.layers)}


def image_unused_shapes(
    config: OpenCLIPImageConfig, text: OpenCLIPTextConfig | None = None
) -> dict[str, tuple[int, ...]]:
    """The image embedder's official tensors that vdlearn drops: ``ln_post``, ``proj`` and the text leftovers.

    ``text`` is the config of the deleted text tower (default: OpenCLIP ViT-H/14's).
    """
    t = text or OpenCLIPTextConfig.preset("openclip_vit_h14")
    return {"visual.ln_post.weight": (config.width,), "visual.ln_post.bias": (config.width,),
            "visual.proj": (config.width, config.projection_dim),
            "token_embedding.weight": (t.vocab_size, t.width), "positional_embedding": (t.context_length, t.width),
            "ln_final.weight": (t.width,), "ln_final.bias": (t.width,), **text_unused_shapes(t)}


def resampler_names(config: ResamplerConfig) -> dict[str, str]:
    """Official Resampler name (after ``image_proj_model.``) -> vdlearn name."""
    names = {"latents": "queries"}
    for part in ("proj_in", "proj_out", "norm_out"):
        names |= {f"{part}.weight": f"{part}.weight", f"{part}.bias": f"{part}.bias"}
    for i in range(config.depth):
        a, f = f"layers.{i}.0.", f"layers.{i}.attn."
        names |= {a + "norm1.weight": f + "norm_image.weight", a + "norm1.bias": f + "norm_image.bias",
                  a + "norm2.weight": f + "norm_queries.weight", a + "norm2.bias": f + "norm_queries.bias",
                  a + "to_q.weight": f + "to_q.weight", a + "to_kv.weight": f + "to_kv.weight",
                  a + "to_out.weight": f + "to_out.weight"}
        a, f = f"layers.{i}.1.", f"layers.{i}.ff."
        names |= {a + "0.weight": f + "norm.weight", a + "0.bias": f + "norm.bias",
                  a + "1.weight": f + "fc1.weight", a + "3.weight": f + "fc2.weight"}
    return names


# ----------------------------------------------------------------------------- shapes (meta device)
def _official_shapes(module: nn.Module, names: dict[str, str], unused: dict, prefix: str) -> dict[str, tuple]:
    own = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    shapes = {prefix + official: own[ours] for official, ours in names.items()}
    return shapes | {prefix + k: tuple(s) for k, s in unused.items()}


def official_text_shapes(config: OpenCLIPTextConfig, prefix: str = TEXT_PREFIX) -> dict[str, tuple[int, ...]]:
    """Every official tensor name and shape of the text tower (built on the meta device, no memory)."""
    with torch.device("meta"):
        module = OpenCLIPTextEncoder(config)
    return _official_shapes(module, text_names(config), text_unused_shapes(config), prefix)


def official_image_shapes(
    config: OpenCLIPImageConfig, prefix: str = IMAGE_PREFIX, text: OpenCLIPTextConfig | None = None
) -> dict[str, tuple[int, ...]]:
    """Every official tensor name and shape under ``embedder.model.`` (visual tower + text leftovers)."""
    with torch.device("meta"):
        module = OpenCLIPImageEncoder(config)
    return _official_shapes(module, image_names(config), image_unused_shapes(config, text), prefix)


def official_resampler_shapes(config: ResamplerConfig, prefix: str = RESAMPLER_PREFIX) -> dict[str, tuple[int, ...]]:
    """Every official tensor name and shape of the Resampler."""
    with torch.device("meta"):
        module = Resampler(config)
    return _official_shapes(module, resampler_names(config), {}, prefix)


def to_official(module: nn.Module, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """A vdlearn text tower, image tower or Resampler as an official state dict (the unused heads left out)."""
    if isinstance(module, OpenCLIPTextEncoder):
        names, default = text_names(module.config), TEXT_PREFIX
    elif isinstance(module, OpenCLIPImageEncoder):
        names, default = image_names(module.config), IMAGE_PREFIX
    elif isinstance(module, Resampler):
        names, default = resampler_names(module.config), RESAMPLER_PREFIX
    else:
        raise TypeError(f"Expected an OpenCLIPTextEncoder, OpenCLIPImageEncoder or Resampler, got {type(module)}.")
    prefix = default if prefix is None else prefix
    own = module.state_dict()
    return {prefix + official: own[ours] for official, ours in names.items()}


# ----------------------------------------------------------------------------- config from shapes
def _layers(keys: list[str], pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def infer_text_config(state_dict: Mapping[str, torch.Tensor], prefix: str = TEXT_PREFIX) -> OpenCLIPTextConfig:
    """The text tower's geometry read from the official shapes; heads = width / 64, VideoCrafter's rules."""
    sd = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    vocab, width = sd["token_embedding.weight"].shape
    projection = sd["text_projection"].shape[1] if "text_projection" in sd else width
    return OpenCLIPTextConfig(
        name="inferred", vocab_size=vocab, context_length=sd["positional_embedding"].shape[0], width=width,
        layers=_layers(list(sd), r"transformer\.resblocks\.(\d+)\."), heads=max(width // 64, 1),
        mlp_width=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0], projection_dim=projection,
    )


def infer_image_config(state_dict: Mapping[str, torch.Tensor], prefix: str = IMAGE_PREFIX) -> OpenCLIPImageConfig:
    """The image tower's geometry read from the official shapes; heads = width / 80 (ViT-H/14)."""
    sd = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    width, _, patch, _ = sd["visual.conv1.weight"].shape
    grid = math.isqrt(sd["visual.positional_embedding"].shape[0] - 1)
    projection = sd["visual.proj"].shape[1] if "visual.proj" in sd else width
    return OpenCLIPImageConfig(
        name="inferred", image_size=grid * patch, patch_size=patch, width=width,
        layers=_layers(list(sd), r"visual\.transformer\.resblocks\.(\d+)\."), heads=max(width // 80, 1),
        mlp_width=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0], projection_dim=projection,
    )


def infer_resampler_config(state_dict: Mapping[str, torch.Tensor], prefix: str = RESAMPLER_PREFIX) -> ResamplerConfig:
    """The Resampler's geometry read from the official shapes; heads = inner width / 64."""
    sd = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    _, queries, dim = sd["latents"].shape
    inner = sd["layers.0.0.to_q.weight"].shape[0]
    return ResamplerConfig(
        name="inferred", dim=dim, depth=_layers(list(sd), r"layers\.(\d+)\."), dim_head=64,
        heads=max(inner // 64, 1), num_queries=queries, embedding_dim=sd["proj_in.weight"].shape[1],
        output_dim=sd["proj_out.weight"].shape[0], ff_mult=sd["layers.0.1.1.weight"].shape[0] // dim,
    )


# ----------------------------------------------------------------------------- loading
def load_official(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], prefix: str, names: dict[str, str],
    unused: dict[str, tuple[int, ...]], what: str,
) -> nn.Module:
    """Copy the official tensors under ``prefix`` into ``module``, or raise one error listing every mismatch.

    Keys outside ``prefix`` (the rest of the checkpoint) are ignored; ``unused`` keys may be
    present (shape-checked) or absent.
    """
    found = rename_checked(state_dict, names, module.state_dict(), kept=unused, kept_required=False, prefix=prefix)
    if not found.ok:
        config = getattr(module, "config", None)
        raise mismatch_error(
            f"The {what} under {prefix!r} does not match {type(module).__name__}"
            + (f" (config {config.name!r})." if config is not None else "."), found.missing, found.unexpected,
            found.shapes,
            hint="Check that the checkpoint is a VideoCrafter checkpoint of this kind, and pass config= if its "
                 "head count is not the ViT-H/14 one.",
        )
    module.load_state_dict(found.converted, strict=True)
    return module


def _from_official(
    state_dict, prefix: str, config, infer: Callable, default: str, preset: Callable, build: Callable,
    names: Callable, unused: Callable, what: str,
):
    state_dict = unwrap_checkpoint(state_dict)
    if not any(k.startswith(prefix) for k in state_dict):
        found = sorted({k.split(".")[0] + "." for k in state_dict})
        raise mismatch_error(f"The checkpoint has no {what} under {prefix!r}; its top-level prefixes are "
                             f"{', '.join(found[:12]) or 'none (it is empty)'}.", [prefix + "*"], [],
                             hint="Pass the prefix this checkpoint uses, or a checkpoint that contains the " + what + ".")
    if config is None:
        try:
            config = infer(state_dict, prefix)
        except (KeyError, IndexError, ValueError):  # keys needed to read the shapes are missing: say which
            config = preset(default)
    elif isinstance(config, str):
        config = preset(config)
    module = build(config)
    return load_official(module, state_dict, prefix, names(config), unused(config), what)


def text_from_official(
    state_dict: Mapping[str, torch.Tensor], prefix: str = TEXT_PREFIX, config: OpenCLIPTextConfig | str | None = None,
) -> OpenCLIPTextEncoder:
    """VideoCrafter's OpenCLIP text tower (``cond_stage_model.model.*``) as an :class:`OpenCLIPTextEncoder`."""
    return _from_official(state_dict, prefix, config, infer_text_config, "openclip_vit_h14",
                          OpenCLIPTextConfig.preset, OpenCLIPTextEncoder, text_names, text_unused_shapes,
                          "OpenCLIP text tower")


def image_from_official(
    state_dict: Mapping[str, torch.Tensor], prefix: str = IMAGE_PREFIX, config: OpenCLIPImageConfig | str | None = None,
    text: OpenCLIPTextConfig | None = None,
) -> OpenCLIPImageEncoder:
    """VideoCrafter1 I2V's OpenCLIP image tower (``embedder.model.*``) as an :class:`OpenCLIPImageEncoder`.

    ``text`` is the config of the deleted text tower whose leftovers the embedder still holds
    (default: ViT-H/14's); the leftovers are shape-checked against it and dropped.
    """
    return _from_official(state_dict, prefix, config, infer_image_config, "openclip_vit_h14",
                          OpenCLIPImageConfig.preset, OpenCLIPImageEncoder, image_names,
                          lambda c: image_unused_shapes(c, text), "OpenCLIP image tower")


def resampler_from_official(
    state_dict: Mapping[str, torch.Tensor], prefix: str = RESAMPLER_PREFIX, config: ResamplerConfig | str | None = None,
) -> Resampler:
    """VideoCrafter1 I2V's image-token Resampler (``image_proj_model.*``) as a :class:`Resampler`."""
    return _from_official(state_dict, prefix, config, infer_resampler_config, "videocrafter1_i2v",
                          ResamplerConfig.preset, Resampler, resampler_names, lambda c: {}, "image Resampler")
