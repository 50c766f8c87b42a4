"""The word-swap probe: which caption words a text-to-video model uses."""

import pytest
import torch

from vdlearn.data.captions import parse_caption
from vdlearn.eval.listening import (
    PROBED,
    format_sensitivity,
    swap_word,
    word_sensitivity,
)
from vdlearn.pipelines.t2v import TextToVideo


def test_swap_word_changes_exactly_one_attribute():
    caption = "a red 3 moving left quickly"
    expected = {"object": "4", "colour": "green", "direction": "right", "speed": "slowly"}
    for attribute in PROBED:
        swapped = parse_caption(swap_word(caption, attribute)).asdict()
        original = parse_caption(caption).asdict()
        assert swapped[attribute] == expected[attribute]
        assert {k: v for k, v in swapped.items() if k != attribute} == \
            {k: v for k, v in original.items() if k != attribute}
    assert parse_caption(swap_word("a white cross moving up slowly", "object")).object == "0"  # wraps around
    assert parse_caption(swap_word("an orange 1 moving down slowly", "colour")).colour == "red"
    with pytest.raises(ValueError, match="no direction"):
        swap_word("a blue star", "direction")
    with pytest.raises(ValueError, match="Unknown attribute"):
        swap_word(caption, "size")


def _model_that_ignores_words():
    torch.manual_seed(0)
    model = TextToVideo.from_preset("tiny")
    with torch.no_grad():
        for p in model.parameters():  # a U-Net that computes something, with every layer live
            if p.ndim > 1 and not p.any():
                p.normal_(0, 0.05)
        model.text_encoder.token_embedding.weight.zero_()  # every word becomes the same vector
        for layer in model.text_encoder.transformer.layers:
            for p in layer.parameters():
                p.zero_()
    return model


def test_a_model_that_cannot_tell_words_apart_shows_no_rise():
    model = _model_that_ignores_words()
    result = word_sensitivity(model, n=8, timesteps=(300, 900), noise_draws=1)
    assert result["timesteps"] == [300, 900] and len(result["loss"]) == 2
    for name, rises in result["increase"].items():
        assert max(abs(r) for r in rises) < 1e-5, name
    table = format_sensitivity(result)
    assert "direction" in table and "empty prompt" in table


def test_a_model_that_reads_words_shows_a_rise():
    torch.manual_seed(0)
    model = _model_that_ignores_words()
    with torch.no_grad():
        model.text_encoder.token_embedding.weight.normal_(0, 1.0)  # words differ again
    result = word_sensitivity(model, n=8, timesteps=(500,), noise_draws=1)
    # an untrained model reads words at random: a wrong word changes the loss, up or down
    assert all(abs(result["increase"][k][0]) > 1e-4 for k in PROBED)


def test_the_shipped_model_uses_its_content_words():
    """Measured on 32 test clips: wrong colour or object words make the shipped model denoise worse."""
    result = word_sensitivity(TextToVideo.load_shipped(), n=32, timesteps=(700,), noise_draws=1)
    rise = {k: v[0] for k, v in result["increase"].items()}
    assert rise["colour"] > 0.5 and rise["object"] > 0.2 and rise["speed"] > 0.2 and rise["empty prompt"] > 0.2


def test_bad_arguments_are_explained():
    model = _model_that_ignores_words()
    with pytest.raises(ValueError, match="outside the schedule"):
        word_sensitivity(model, n=2, timesteps=(5000,))
    with pytest.raises(ValueError, match="at least 1"):
        word_sensitivity(model, n=0)
