"""LaVie's text encoder: SD 1.4's CLIP ViT-L/14 in transformers' layout -> :class:`OpenCLIPTextEncoder`.

LaVie (Vchitect/LaVie, ``base/sample.py``) conditions on the ``text_encoder/`` of
``CompVis/stable-diffusion-v1-4``: a transformers ``CLIPTextModel`` (OpenAI CLIP ViT-L/14's
text tower: width 768, 12 blocks, quick-GELU) whose ``last_hidden_state`` (all blocks,
then ``final_layer_norm``) is the U-Net's ``(b, 77, 768)`` context. It is the same
transformer as OpenCLIP's, so vdlearn runs it as preset ``clip_vit_l14`` of
:class:`~vdlearn.models.clip.OpenCLIPTextEncoder`; SD's tokenizer is the same BPE
vocabulary, padded with ``<end_of_text>`` (49407) instead of 0.

Names, transformers (``text_model.`` in the files, dropped by transformers 5 in memory;
both accepted) -> vdlearn::

    embeddings.token_embedding.weight          token_embed.weight
    embeddings.position_embedding.weight       pos_embed
    encoder.layers.N.layer_norm1 / 2           blocks.N.norm1 / norm2
    encoder.layers.N.self_attn.{q,k,v}_proj    blocks.N.attn.qkv         (stacked q, k, v)
    encoder.layers.N.self_attn.out_proj        blocks.N.attn.out
    encoder.layers.N.mlp.fc1 / fc2             blocks.N.mlp.fc1 / fc2
    final_layer_norm                           final_norm

Older files also hold the buffer ``embeddings.position_ids`` (0..76); it is dropped.
The weights come from the Hub only when a user asks for them (notebook 10_pretrained);
this module reads a local folder.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import torch

from vdlearn.io import mismatch_error, read_foreign_checkpoint, unwrap_checkpoint
from vdlearn.models.clip import OpenCLIPTextConfig, OpenCLIPTextEncoder
from vdlearn.pretrained.naming import rename_checked

_OPTIONAL = ("embeddings.position_ids",)
_BLOCK = {"layer_norm1": "norm1", "layer_norm2": "norm2", "self_attn.out_proj": "attn.out",
          "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


def transformers_names(config: OpenCLIPTextConfig) -> dict[str, str]:
    """transformers name -> vdlearn name for every tensor except the q/k/v projections (stacked into ``qkv``)."""
    names = {"embeddings.token_embedding.weight": "token_embed.weight",
             "embeddings.position_embedding.weight": "pos_embed",
             "final_layer_norm.weight": "final_norm.weight", "final_layer_norm.bias": "final_norm.bias"}
    for i in range(config.layers):
        for theirs, ours in _BLOCK.items():
            for p in ("weight", "bias"):
                names[f"encoder.layers.{i}.{theirs}.{p}"] = f"blocks.{i}.{ours}.{p}"
    return names


def config_from_transformers(hf_config: Mapping) -> OpenCLIPTextConfig:
    """A transformers ``CLIPTextConfig`` (its ``config.json`` as a dict) as vdlearn's config, SD's rules."""
    act = hf_config.get("hidden_act", "quick_gelu")
    if act not in ("gelu", "quick_gelu"):
        raise ValueError(f"hidden_act {act!r} is not supported (expected 'gelu' or 'quick_gelu').")
    return dataclasses.replace(
        OpenCLIPTextConfig.preset("clip_vit_l14"), name="transformers",
        vocab_size=hf_config.get("vocab_size", 49408), context_length=hf_config.get("max_position_embeddings", 77),
        width=hf_config.get("hidden_size", 768), layers=hf_config.get("num_hidden_layers", 12),
        heads=hf_config.get("num_attention_heads", 12), mlp_width=hf_config.get("intermediate_size", 3072),
        activation=act, eps=hf_config.get("layer_norm_eps", 1e-5),
    )


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> OpenCLIPTextConfig:
    """``clip_vit_l14``'s rules with the geometry read from the shapes (heads = width / 64)."""
    preset = OpenCLIPTextConfig.preset("clip_vit_l14")
    try:
        vocab, width = state_dict["embeddings.token_embedding.weight"].shape
        return dataclasses.replace(
            preset, name="inferred", vocab_size=vocab, width=width, heads=max(width // 64, 1),
            context_length=state_dict["embeddings.position_embedding.weight"].shape[0],
            layers=len({k.split(".")[2] for k in state_dict if k.startswith("encoder.layers.")}),
            mlp_width=state_dict["encoder.layers.0.mlp.fc1.weight"].shape[0],
        )
    except KeyError:  # the keys that give the shapes are missing: the mismatch error will list them
        return preset


def text_from_transformers(
    state_dict: Mapping[str, torch.Tensor], config: OpenCLIPTextConfig | Mapping | None = None
) -> OpenCLIPTextEncoder:
    """A ``CLIPTextModel`` state dict as an :class:`OpenCLIPTextEncoder` (default: SD 1.4's ``clip_vit_l14``).

    ``config`` is a vdlearn config, a transformers ``config.json`` dict, or None (the
    ``clip_vit_l14`` rules with width, blocks and vocabulary read from the shapes).
    """
    sd = {k.removeprefix("text_model."): v for k, v in unwrap_checkpoint(state_dict).items()}
    if isinstance(config, Mapping):
        config = config_from_transformers(config)
    elif config is None:
        config = infer_config(sd)
    module = OpenCLIPTextEncoder(config)
    names = transformers_names(config)
    qkv = {f"encoder.layers.{i}.self_attn.{n}_proj.{p}": (config.width, config.width) if p == "weight"
           else (config.width,) for i in range(config.layers) for n in "qkv" for p in ("weight", "bias")}
    found = rename_checked({k: v for k, v in sd.items() if k not in _OPTIONAL}, names, module.state_dict(), kept=qkv)
    converted, parts = found.converted, found.kept
    if not found.ok:
        raise mismatch_error(f"The CLIP text-encoder weights do not match OpenCLIPTextEncoder (config "
                             f"{config.name!r}).", found.missing, found.unexpected, found.shapes,
                             hint="Expected the text_encoder/ of a Stable Diffusion 1.x folder (CLIPTextModel).")
    for i in range(config.layers):
        for p in ("weight", "bias"):  # rows of qkv: all q, then all k, then all v
            converted[f"blocks.{i}.attn.qkv.{p}"] = torch.cat(
                [parts[f"encoder.layers.{i}.self_attn.{n}_proj.{p}"] for n in "qkv"])
    module.load_state_dict(converted, strict=True)
    return module


def load_lavie_text_encoder(folder: str | Path) -> OpenCLIPTextEncoder:
    """SD 1.4's text encoder from a local diffusers folder (``text_encoder/`` or the folder above it).

    Reads ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``).
    """
    folder = Path(folder)
    if (folder / "text_encoder").is_dir():
        folder = folder / "text_encoder"
    config_path = folder / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"No config.json in {folder}: expected the text_encoder/ folder of a "
                                f"Stable Diffusion 1.x checkpoint (e.g. CompVis/stable-diffusion-v1-4).")
    weights = next((folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).exists()), None)
    if weights is None:
        raise FileNotFoundError(f"No model.safetensors or pytorch_model.bin in {folder}.")
    return text_from_transformers(read_foreign_checkpoint(weights), json.loads(config_path.read_text()))
