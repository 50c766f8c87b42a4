"""A text encoder for toy captions: word tokens, a small transformer, trained with the model.

VideoCrafter conditions on frozen OpenCLIP ViT-H text features (77 tokens x 1024) and
LaVie on CLIP ViT-L (77 x 768). Neither can be downloaded here, and a frozen sentence
encoder barely separates "moving left" from "moving right" anyway (cosine 0.95 with
MiniLM). So the toy models learn their own text encoder, jointly with the U-Net.

Why word-level tokens rather than CLIP's BPE? The toy language has 40 words
(:func:`vdlearn.data.captions.vocabulary`). A CLIP BPE table is 49,408 x width
parameters (6.7M at width 128), almost all unused; a word table is 44 x width. The
architecture is otherwise CLIP's text tower in miniature: token plus position
embeddings, pre-LayerNorm transformer blocks, a final LayerNorm, and *all* token
states handed to cross-attention (as VideoCrafter and LaVie do), not a pooled vector.

The unconditional input for classifier-free guidance is the empty caption ``""``,
encoded like any other (VideoCrafter's ``uncond_type: empty_seq``), not a zero
tensor. A word outside the vocabulary raises :class:`UnknownWordError` naming it.

Taught in notebook 05_text_to_video.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vdlearn.data.captions import (
    FILLERS,
    OBJECTS,
    SYNONYMS,
    UnknownWordError,
    vocabulary,
)

SPECIAL = ("<pad>", "<start>", "<end>")


class WordTokenizer:
    """Captions -> fixed-length word ids: ``<start> word ... <end> <pad> ...``.

    >>> WordTokenizer().words("The blue three goes up fast")
    ['the', 'blue', '3', 'goes', 'up', 'quickly']
    """

    def __init__(self, max_words: int = 8):
        canonical = [w for w in vocabulary() if w not in SYNONYMS]  # synonyms map onto canonical words
        self.itos: list[str] = list(SPECIAL) + canonical
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.max_words = max_words
        self.length = max_words + 2  # with <start> and <end>

    def __len__(self) -> int:
        return len(self.itos)

    def words(self, caption: str) -> list[str]:
        out = []
        for raw in caption.lower().replace(",", " ").replace(".", " ").split():
            word = SYNONYMS.get(raw, raw)
            if word not in self.stoi or word in SPECIAL:
                raise UnknownWordError(
                    f"Unknown word {raw!r} in prompt {caption!r}. The toy text encoder knows only these words: "
                    f"{' '.join(w for w in self.itos if w not in SPECIAL)} (and the synonyms "
                    f"{', '.join(SYNONYMS)}). Objects are {' '.join(OBJECTS)}; fillers {' '.join(FILLERS)}."
                )
            out.append(word)
        if len(out) > self.max_words:
            raise ValueError(f"Prompt {caption!r} has {len(out)} words; the toy text encoder reads at most {self.max_words}.")
        return out

    def __call__(self, captions: Sequence[str] | str) -> torch.Tensor:
        """``(b, max_words + 2)`` long ids."""
        if isinstance(captions, str):
            captions = [captions]
        ids = torch.zeros(len(captions), self.length, dtype=torch.long)  # <pad> = 0
        for i, caption in enumerate(captions):
            seq = ["<start>", *self.words(caption), "<end>"]
            ids[i, : len(seq)] = torch.tensor([self.stoi[w] for w in seq])
        return ids


@dataclass(frozen=True)
class TextEncoderConfig:
    """Size of the toy text encoder. Presets: :data:`TEXT_PRESETS`."""

    width: int = 128  # token width = the U-Net's context_dim
    layers: int = 2  # transformer blocks
    heads: int = 4  # attention heads
    max_words: int = 8  # longest prompt, in words


TEXT_PRESETS = {"toy": TextEncoderConfig(), "tiny": TextEncoderConfig(width=32, layers=1, heads=2)}


class ToyTextEncoder(nn.Module):
    """Captions -> token features ``(b, max_words + 2, width)`` for cross-attention."""

    def __init__(self, config: TextEncoderConfig = TextEncoderConfig()):
        super().__init__()
        self.config = config
        self.tokenizer = WordTokenizer(config.max_words)
        n = self.tokenizer.length
        self.token_embedding = nn.Embedding(len(self.tokenizer), config.width)
        self.position_embedding = nn.Parameter(torch.randn(n, config.width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            config.width, config.heads, dim_feedforward=4 * config.width, dropout=0.0,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(config.width)

    @property
    def device(self) -> torch.device:
        return self.token_embedding.weight.device

    def forward(self, captions: Sequence[str] | str | torch.Tensor) -> torch.Tensor:
        """Encode captions (or pre-tokenised ids) into ``(b, n_tokens, width)``."""
        ids = captions if isinstance(captions, torch.Tensor) else self.tokenizer(captions)
        ids = ids.to(self.device)
        x = self.token_embedding(ids) + self.position_embedding  # (b, n, d)
        pad = ids == 0  # keys to ignore; every sequence keeps <start> and <end>
        x = self.transformer(x, src_key_padding_mask=pad)
        return self.final_norm(x)
