"""Looking inside a video U-Net: temporal attention maps and where the parameters are.

* :func:`record_temporal_attention` hooks every temporal attention of a model (a
  :class:`VideoUNet` or anything containing :class:`TemporalTransformer` modules) and
  records its probabilities ``(b*h*w, heads, t, t)``: row ``i`` says how much frame ``i``
  looks at every frame ``j``, at one pixel.
* :func:`parameter_breakdown` counts parameters per kind of module: how much the
  temporal layers add to the Stable Diffusion U-Net (VideoCrafter2, arXiv 2401.09047).

Taught in ``notebooks/04_temporal_unet.ipynb``.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from vdlearn.models.unet.resblock import (
    ResBlock,
    TemporalConvBlock,
    TemporalResBlock,
    TemporalResModule,
)
from vdlearn.models.unet.transformer import (
    BlockTemporalAttention,
    SpatialTransformer,
    TemporalTransformer,
)


@contextmanager
def record_temporal_attention(model: nn.Module):
    """Record the attention probabilities of every temporal attention during the forward passes inside.

    Yields a dict ``{"<transformer name>.blocks.<j>.attn<1|2>": (b*h*w, heads, t, t)}``
    (the last call of each layer wins). Example::

        with record_temporal_attention(unet) as maps:
            unet(x, t, context, fps=8)
        maps["mid.temporal.blocks.0.attn1"].shape    # (b*h*w, heads, t, t)
    """
    maps: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in model.named_modules():
        if not isinstance(module, TemporalTransformer):
            continue
        for j, block in enumerate(module.blocks):
            for which in ("attn1", "attn2"):
                key = f"{name}.blocks.{j}.{which}" if name else f"blocks.{j}.{which}"

                def hook(mod, args, output, key=key):
                    maps[key] = mod.attention_probs(args[0]).detach()

                hooks.append(getattr(block, which).register_forward_hook(hook))
    try:
        yield maps
    finally:
        for h in hooks:
            h.remove()


def parameter_breakdown(model: nn.Module) -> dict[str, int]:
    """Parameters per kind of module (each parameter counted once).

    Keys: ``"ResBlocks (2D convs)"``, ``"temporal convs"`` (VideoCrafter's temporal conv blocks,
    LaVie VSR's temporal ResBlocks and level modules), ``"spatial transformers"``,
    ``"temporal transformers"`` (including ``init_attn`` and LaVie's temporal attention inside
    the spatial transformer blocks), ``"embeddings"`` (time, fps, noise level), ``"other"`` (stem,
    resampling, output head).
    """
    counted: set[int] = set()
    out = {k: 0 for k in ("ResBlocks (2D convs)", "temporal convs", "spatial transformers",
                          "temporal transformers", "embeddings", "other")}

    def add(key: str, module: nn.Module) -> None:
        for p in module.parameters():
            if id(p) not in counted:
                counted.add(id(p))
                out[key] += p.numel()

    # the most specific kinds first, so a ResBlock's temporal conv is not counted as 2D
    kinds = [(TemporalConvBlock, "temporal convs"), (TemporalResBlock, "temporal convs"),
             (TemporalResModule, "temporal convs"), (TemporalTransformer, "temporal transformers"),
             (BlockTemporalAttention, "temporal transformers"), (SpatialTransformer, "spatial transformers"),
             (ResBlock, "ResBlocks (2D convs)")]
    for kind, key in kinds:
        for m in model.modules():
            if isinstance(m, kind):
                add(key, m)
    for name in ("time_embed", "fps_embed", "noise_level_embed"):
        if getattr(model, name, None) is not None:
            add("embeddings", getattr(model, name))
    for p in model.parameters():  # stem, resampling, output head
        if id(p) not in counted:
            counted.add(id(p))
            out["other"] += p.numel()
    return out
