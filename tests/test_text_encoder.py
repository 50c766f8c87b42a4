"""The toy text encoder: word tokens, clear errors, the empty prompt for guidance."""

import pytest
import torch

from vdlearn.data import ToyWorld, UnknownWordError
from vdlearn.models.text import TEXT_PRESETS, ToyTextEncoder, WordTokenizer


def test_tokenizer_covers_every_world_caption_and_normalises_synonyms():
    tok = WordTokenizer()
    world = ToyWorld()
    captions = world.batch(range(200))["caption"] + world.images(range(100))["caption"]
    ids = tok(captions)
    assert ids.shape == (300, tok.length) and (ids[:, 0] == tok.stoi["<start>"]).all()
    assert torch.equal(tok("The blue three goes up fast"), tok("the blue 3 goes up quickly"))
    empty = tok("")
    assert empty[0, :2].tolist() == [tok.stoi["<start>"], tok.stoi["<end>"]] and empty[0, 2:].eq(0).all()


def test_unknown_words_name_the_vocabulary():
    with pytest.raises(UnknownWordError, match="purple.*knows only these words.*orange"):
        WordTokenizer()("a purple 3")
    with pytest.raises(ValueError, match="at most"):
        WordTokenizer(max_words=3)("a red 3 moving left")


def test_encoder_shapes_and_padding_is_ignored():
    enc = ToyTextEncoder(TEXT_PRESETS["tiny"]).eval()
    out = enc(["a red 3 moving left quickly", ""])
    assert out.shape == (2, enc.tokenizer.length, 32) and torch.isfinite(out).all()
    # the features of real tokens do not depend on what sits in padded positions
    ids = enc.tokenizer(["a red 3"])
    ids2 = ids.clone()
    ids2[0, -1] = 0
    assert torch.allclose(enc(ids)[0, :5], enc(ids2)[0, :5])
    # different words give different features
    a, b = enc(["a red 3 moving left"]), enc(["a red 3 moving right"])
    assert (a - b).abs().max() > 1e-3
