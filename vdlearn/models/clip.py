"""CLIP's text and image towers, as VideoCrafter and LaVie condition on them.

Both towers are the same transformer (Radford et al. 2021, "Learning Transferable Visual
Models From Natural Language Supervision", section 2.4; the OpenCLIP ViT-H/14 of Cherti
et al. 2023): pre-LayerNorm residual blocks, each ``x + attn(norm1(x))`` then
``x + mlp(norm2(x))``, with one fused q/k/v projection and an MLP four times as wide.
What differs is what goes in and what comes out:

* **Text** (:class:`OpenCLIPTextEncoder`): 77 BPE ids (:mod:`vdlearn.models.bpe`) ->
  token embedding + learned positions -> blocks with a *causal* mask (a token sees only
  the tokens before it) -> final LayerNorm -> ``(b, 77, width)``, every token kept (the
  U-Net's cross-attention reads all 77, not CLIP's pooled vector).

  - VideoCrafter1/2 (``FrozenOpenCLIPEmbedder`` with ``layer: penultimate`` in
    ``lvdm/modules/encoders/condition.py``): OpenCLIP ViT-H/14, width 1024, 24 blocks, GELU,
    padding id 0. It stops after the **penultimate** block (23 of 24 run) and applies
    ``ln_final`` to that: preset ``openclip_vit_h14``, output ``(b, 77, 1024)``. The 24th
    block is in the checkpoint (and in this module, so the weights load) but never runs.
  - LaVie (SD 1.4's ``CLIPTextModel``, ``last_hidden_state``): OpenAI CLIP ViT-L/14, width
    768, 12 blocks, quick-GELU ``x * sigmoid(1.702 x)``, all blocks run, padding with
    ``<end_of_text>`` 49407: preset ``clip_vit_l14``, output ``(b, 77, 768)``.

* **Image** (:class:`OpenCLIPImageEncoder`, VideoCrafter1 I2V's
  ``FrozenOpenCLIPImageEmbedderV2``): a 224 x 224 image cut into 16 x 16 patches of 14 x 14
  pixels (one strided convolution), a learned class token in front, learned positions,
  ``ln_pre``, all 32 blocks (no mask) -> ``(b, 257, 1280)``. I2V takes all 257 tokens
  straight from the transformer: no ``ln_post``, no projection (both are in the
  checkpoint, for CLIP's contrastive loss, and are not used). The
  :class:`~vdlearn.models.resampler.Resampler` turns them into 16 tokens for the U-Net.

Image preprocessing (:meth:`OpenCLIPImageEncoder.preprocess`) follows the official I2V
path: the conditioning image in [-1, 1] at any size is resized to 224 x 224 with
*antialiased* bicubic interpolation (kornia's ``resize(..., 'bicubic', align_corners=True,
antialias=True)``: a Gaussian blur of sigma ``(factor - 1) / 2`` before shrinking, none
when enlarging), mapped to [0, 1], then normalised with CLIP's mean and std. The
unconditional image for classifier-free guidance is ``torch.zeros(b, 3, 224, 224)``
passed through the same preprocessing, i.e. mid-grey (``scripts/evaluation/funcs.py``).

Official checkpoint names are translated by :mod:`vdlearn.pretrained.openclip`
(VideoCrafter) and :mod:`vdlearn.pretrained.hf_clip` (LaVie / SD 1.4). Full-size towers
are large (353M text, 631M image parameters): build them on ``torch.device("meta")`` to
inspect them. Taught in notebook 10_pretrained.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vdlearn.io import InputError
from vdlearn.models.bpe import BPETokenizer

#: CLIP's image normalisation (OpenAI's dataset statistics; OpenCLIP uses the same).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ACTIVATIONS = ("gelu", "quick_gelu")


# ----------------------------------------------------------------------------- configs
@dataclass
class OpenCLIPTextConfig:
    """Everything that shapes an :class:`OpenCLIPTextEncoder`. Presets: :data:`TEXT_PRESETS`."""

    name: str = "custom"
    vocab_size: int = 49408  # the BPE vocabulary (bpe.py); a numeric test may use fewer
    context_length: int = 77  # ids per caption
    width: int = 1024
    layers: int = 24  # residual blocks held (and loaded)
    heads: int = 16
    mlp_width: int = 4096
    activation: str = "gelu"  # "gelu" (OpenCLIP ViT-H) or "quick_gelu" (OpenAI CLIP ViT-L)
    output_layer: str = "penultimate"  # "penultimate": stop one block early; "last": run all
    pad_id: int = 0  # 0 (open_clip.tokenize) or 49407 (SD's CLIPTokenizer)
    eps: float = 1e-5  # LayerNorm epsilon
    projection_dim: int = 1024  # width of CLIP's unused contrastive head (text_projection) in checkpoints

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}.")
        if self.output_layer not in ("last", "penultimate"):
            raise ValueError(f"output_layer must be 'last' or 'penultimate', got {self.output_layer!r}.")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}.")
        if self.output_layer == "penultimate" and self.layers < 2:
            raise ValueError("output_layer='penultimate' needs at least 2 layers.")

    @property
    def blocks_run(self) -> int:
        """How many blocks the forward pass runs (23 of 24 for VideoCrafter's penultimate layer)."""
        return self.layers - 1 if self.output_layer == "penultimate" else self.layers

    @classmethod
    def preset(cls, name: str, **overrides) -> OpenCLIPTextConfig:
        """A named preset (see :data:`TEXT_PRESETS`), with fields overridden by keyword."""
        if name not in TEXT_PRESETS:
            raise KeyError(f"Unknown text-encoder preset {name!r}. Available: {', '.join(TEXT_PRESETS)}.")
        return dataclasses.replace(TEXT_PRESETS[name], name=name, **overrides)


#: Named text towers. Presets are data.
TEXT_PRESETS: dict[str, OpenCLIPTextConfig] = {
    # VideoCrafter1/2: OpenCLIP ViT-H/14 (laion2b), penultimate block + ln_final, pad 0.
    "openclip_vit_h14": OpenCLIPTextConfig(),
    # The same rules at reduced width (for tests): real vocabulary, 3 blocks of width 128.
    "openclip_reduced": OpenCLIPTextConfig(width=128, layers=3, heads=2, mlp_width=512, projection_dim=96),
    # LaVie: SD 1.4's CLIP ViT-L/14 text encoder (transformers CLIPTextModel, last_hidden_state).
    "clip_vit_l14": OpenCLIPTextConfig(width=768, layers=12, heads=12, mlp_width=3072, activation="quick_gelu",
                                       output_layer="last", pad_id=49407, projection_dim=768),
}


@dataclass
class OpenCLIPImageConfig:
    """Everything that shapes an :class:`OpenCLIPImageEncoder`. Presets: :data:`IMAGE_PRESETS`."""

    name: str = "custom"
    image_size: int = 224
    patch_size: int = 14
    width: int = 1280
    layers: int = 32
    heads: int = 16  # head width 80
    mlp_width: int = 5120
    activation: str = "gelu"
    eps: float = 1e-5
    projection_dim: int = 1024  # width of CLIP's unused contrastive head (visual.proj) in checkpoints
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}.")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}.")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}.")

    @property
    def num_tokens(self) -> int:
        """Patches plus the class token: (224 / 14)^2 + 1 = 257."""
        return (self.image_size // self.patch_size) ** 2 + 1

    @classmethod
    def preset(cls, name: str, **overrides) -> OpenCLIPImageConfig:
        """A named preset (see :data:`IMAGE_PRESETS`), with fields overridden by keyword."""
        if name not in IMAGE_PRESETS:
            raise KeyError(f"Unknown image-encoder preset {name!r}. Available: {', '.join(IMAGE_PRESETS)}.")
        return dataclasses.replace(IMAGE_PRESETS[name], name=name, **overrides)


#: Named image towers. Presets are data.
IMAGE_PRESETS: dict[str, OpenCLIPImageConfig] = {
    # VideoCrafter1 I2V: OpenCLIP ViT-H/14 visual tower, all 257 tokens of its transformer.
    "openclip_vit_h14": OpenCLIPImageConfig(),
    # The same rules at reduced width (for tests): 224 px, 14 px patches, 3 blocks of width 160.
    "openclip_reduced": OpenCLIPImageConfig(width=160, layers=3, heads=2, mlp_width=640, projection_dim=96),
}


# ----------------------------------------------------------------------------- the block
class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused projection to q, k and v (``nn.MultiheadAttention``'s layout)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)  # rows: all q, then all k, then all v
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        b, n, width = x.shape  # (b, n, width)
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (b, heads, n, head_width)
        return self.out(y.transpose(1, 2).reshape(b, n, width))


class MLP(nn.Module):
    """``fc2(act(fc1(x)))`` with GELU (exact) or quick-GELU ``x * sigmoid(1.702 x)``."""

    def __init__(self, width: int, hidden: int, activation: str):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        h = F.gelu(h) if self.activation == "gelu" else h * torch.sigmoid(1.702 * h)
        return self.fc2(h)


class ResidualBlock(nn.Module):
    """One pre-LayerNorm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, width: int, heads: int, mlp_width: int, activation: str, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = MLP(width, mlp_width, activation)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), causal)
        return x + self.mlp(self.norm2(x))


@functools.cache
def _tokenizer(context_length: int, pad_id: int) -> BPETokenizer:
    return BPETokenizer(context_length=context_length, pad_id=pad_id)


# ----------------------------------------------------------------------------- text tower
class OpenCLIPTextEncoder(nn.Module):
    """Captions -> ``(b, context_length, width)`` token features for cross-attention.

    >>> enc = OpenCLIPTextEncoder(OpenCLIPTextConfig.preset("openclip_reduced"))
    >>> enc.encode(["a red 3 moving left", ""]).shape
    torch.Size([2, 77, 128])
    """

    def __init__(self, config: OpenCLIPTextConfig | str = "openclip_vit_h14"):
        super().__init__()
        if isinstance(config, str):
            config = OpenCLIPTextConfig.preset(config)
        self.config = c = config
        self.token_embed = nn.Embedding(c.vocab_size, c.width)
        self.pos_embed = nn.Parameter(torch.empty(c.context_length, c.width))  # (77, width), learned
        self.blocks = nn.ModuleList(
            ResidualBlock(c.width, c.heads, c.mlp_width, c.activation, c.eps) for _ in range(c.layers)
        )
        self.final_norm = nn.LayerNorm(c.width, eps=c.eps)
        nn.init.normal_(self.token_embed.weight, std=0.02)  # OpenCLIP's initialisation of the two tables
        nn.init.normal_(self.pos_embed, std=0.01)

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """``(b, context_length)`` ids with this preset's padding (0 for OpenCLIP, 49407 for SD)."""
        return _tokenizer(self.config.context_length, self.config.pad_id)(texts)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(b, 77)`` ids -> ``(b, 77, width)``: embeddings, ``blocks_run`` causal blocks, final LayerNorm."""
        c = self.config
        if tokens.ndim != 2 or tokens.shape[1] != c.context_length or tokens.dtype != torch.long:
            raise InputError(f"Expected token ids of shape (b, {c.context_length}) and dtype long (from "
                             f".tokenize), got shape {tuple(tokens.shape)} and dtype {tokens.dtype}.")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= c.vocab_size):
            raise InputError(f"Token ids must lie in [0, {c.vocab_size}), got [{int(tokens.min())}, "
                             f"{int(tokens.max())}]: tokenize with this encoder's .tokenize.")
        x = self.token_embed(tokens) + self.pos_embed  # (b, 77, width)
        for block in self.blocks[: c.blocks_run]:
            x = block(x, causal=True)
        return self.final_norm(x)  # (b, 77, width)

    def encode(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Captions -> ``(b, 77, width)``; ``""`` gives the unconditional embedding (``uncond_type: empty_seq``)."""
        return self(self.tokenize(texts).to(self.pos_embed.device))


# ----------------------------------------------------------------------------- image tower
def gaussian_kernel1d(size: int, sigma: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A normalised Gaussian of odd ``size`` taps centred on the middle one."""
    x = torch.arange(size, dtype=dtype) - size // 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def antialiased_resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(b, c, H, W)`` -> ``(b, c, *size)``: bicubic (``align_corners=True``), blurred first when shrinking.

    The rule of kornia's ``resize(..., antialias=True)``, which VideoCrafter's I2V uses: along
    each axis shrunk by ``factor = in / out > 1`` a Gaussian of ``sigma = (factor - 1) / 2``
    (at least 0.001) over ``max(4 sigma, 3)`` taps (rounded down, made odd) with reflected borders.
    """
    h, w = images.shape[-2:]
    factors = (h / size[0], w / size[1])
    if max(factors) > 1:
        sigmas = [max((f - 1) / 2, 0.001) for f in factors]
        taps = [int(max(4 * s, 3)) for s in sigmas]
        taps = [t if t % 2 else t + 1 for t in taps]
        taps = [1 if n == 1 else t for n, t in zip((h, w), taps, strict=True)]  # a 1-pixel axis is not blurred
        ky, kx = (gaussian_kernel1d(t, s, images.dtype).to(images.device) for t, s in zip(taps, sigmas, strict=True))
        c = images.shape[1]
        x = F.pad(images, (taps[1] // 2, taps[1] // 2, taps[0] // 2, taps[0] // 2), mode="reflect")
        x = F.conv2d(x, kx.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # along W
        images = F.conv2d(x, ky.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # along H
    return F.interpolate(images, size=size, mode="bicubic", align_corners=True)


class OpenCLIPImageEncoder(nn.Module):
    """Preprocessed images ``(b, 3, 224, 224)`` -> all ``(b, 257, width)`` transformer tokens.

    ``encode(images)`` does both steps for images in [-1, 1]:
    ``forward(preprocess(images))``.
    """

    def __init__(self, config: OpenCLIPImageConfig | str = "openclip_vit_h14"):
        super().__init__()
        if isinstance(config, str):
            config = OpenCLIPImageConfig.preset(config)
        self.config = c = config
        self.patch_embed = nn.Conv2d(3, c.width, c.patch_size, stride=c.patch_size, bias=False)
        self.class_embed = nn.Parameter(torch.empty(c.width))  # the learned token put in front
        self.pos_embed = nn.Parameter(torch.empty(c.num_tokens, c.width))  # (257, width)
        self.norm_pre = nn.LayerNorm(c.width, eps=c.eps)
        self.blocks = nn.ModuleList(
            ResidualBlock(c.width, c.heads, c.mlp_width, c.activation, c.eps) for _ in range(c.layers)
        )
        scale = c.width**-0.5  # OpenCLIP's initialisation
        nn.init.normal_(self.class_embed, std=scale)
        nn.init.normal_(self.pos_embed, std=scale)
        self.register_buffer("mean", torch.tensor(c.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(c.std).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], ``(b, 3, H, W)`` -> CLIP input ``(b, 3, 224, 224)`` (resize, [0, 1], mean/std)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"Expected images of shape (b, 3, H, W) in [-1, 1], got {tuple(images.shape)}.")
        if images.numel() and (float(images.min()) < -1.5 or float(images.max()) > 1.5):
            raise InputError(f"Expected images in [-1, 1], got values in [{float(images.min()):.3g}, "
                             f"{float(images.max()):.3g}]; map [0, 255] pixels with x / 127.5 - 1.")
        size = (self.config.image_size, self.config.image_size)
        x = antialiased_resize(images.float(), size)  # (b, 3, 224, 224) in [-1, 1]
        x = (x + 1) / 2  # [0, 1]
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(b, 3, 224, 224)`` preprocessed -> ``(b, 257, width)``: class token + 256 patch tokens."""
        c = self.config
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, c.image_size, c.image_size):
            raise InputError(f"Expected preprocessed images of shape (b, 3, {c.image_size}, {c.image_size}), "
                             f"got {tuple(images.shape)}: call .preprocess (or .encode) first.")
        x = self.patch_embed(images)  # (b, width, 16, 16)
        x = x.flatten(2).transpose(1, 2)  # (b, 256, width), patches in row-major order
        cls = self.class_embed.to(x.dtype).expand(x.shape[0], 1, -1)  # (b, 1, width)
        x = torch.cat([cls, x], dim=1) + self.pos_embed  # (b, 257, width)
        x = self.norm_pre(x)
        for block in self.blocks:
            x = block(x)
        return x  # (b, 257, width): no ln_post, no projection

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] at any size -> ``(b, 257, width)``.

        The unconditional input of I2V guidance is ``encode(torch.zeros(b, 3, 224, 224))``.
        """
        return self(self.preprocess(images.to(self.pos_embed.device)))

