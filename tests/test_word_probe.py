"""The word-swap probe: which caption words a text-to-video model uses."""

import math

import pytest
import torch
from torch import nn

from vdlearn.data.captions import parse_caption
from vdlearn.eval.word_probe import (
    PROBED,
    first_guess,
    format_sensitivity,
    mean_clip,
    relative_gap,
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
    """Wrong colour, object or speed words make the shipped model (data/t2v/toy) denoise worse.

    Measured on these 32 test clips at t=700 (noise seed 0): colour +252%, object +56%, speed
    +102%, empty prompt +52%. Over noise seeds 0-2 the figures move by at most 0.25, 0.03, 0.18
    and 0.03: each threshold is the measured figure minus about twice that spread.
    """
    result = word_sensitivity(TextToVideo.load_shipped("toy"), n=32, timesteps=(700,), noise_draws=1)
    rise = {k: v[0] for k, v in result["increase"].items()}
    assert rise["colour"] > 2.0 and rise["object"] > 0.45 and rise["speed"] > 0.7 and rise["empty prompt"] > 0.45


def test_bad_arguments_are_explained():
    model = _model_that_ignores_words()
    with pytest.raises(ValueError, match="outside the schedule"):
        word_sensitivity(model, n=2, timesteps=(5000,))
    with pytest.raises(ValueError, match="at least 1"):
        word_sensitivity(model, n=0)


LEFT, RIGHT = "a red 3 moving left quickly", "a red 3 moving right quickly"


def test_the_data_mean_depends_on_the_direction():
    """Clips moving left start further right than clips moving right: their means differ."""
    model = TextToVideo.from_preset("tiny")
    means = mean_clip(model, [LEFT, RIGHT, LEFT], n=32)
    assert means.shape == (3, *model.config.latent_shape)
    # measured 0.368 on these 32 clips (0.370 and 0.395 with world seeds 1 and 2)
    assert relative_gap(means[0], means[1]) > 0.33
    # each caption's mean is its own: nothing is carried over from the caption before it
    torch.testing.assert_close(means[2], means[0], atol=0, rtol=0)
    with pytest.raises(ValueError, match="image"):
        mean_clip(model, ["a red star"], n=2)


def test_the_data_mean_is_the_mean_over_all_n_clips():
    """Chunking the clips differently gives the same mean (every clip counted once, divided by n)."""
    model = TextToVideo.from_preset("tiny")
    whole = mean_clip(model, [LEFT], n=7, batch_size=64)
    torch.testing.assert_close(mean_clip(model, [LEFT], n=7, batch_size=3), whole, atol=1e-6, rtol=1e-5)
    assert relative_gap(mean_clip(model, [LEFT], n=6, batch_size=3)[0], whole[0]) > 1e-3  # n matters


class OracleT2V(nn.Module):
    """A stand-in text-to-video model that knows the answer: for each caption a fixed clean clip ``x0*``.

    At any step it returns the textbook v-prediction of that clip, ``v = sqrt(a) eps - sqrt(1-a) x0*``
    with ``eps = (x_t - sqrt(a) x0*) / sqrt(1-a)`` (Salimans & Ho 2022), so a correct reading of its
    output recovers ``x0*`` exactly, whatever the noise.
    """

    def __init__(self):
        super().__init__()
        base = TextToVideo.from_preset("tiny")
        self.config, self.schedule, self.tokenize = base.config, base.schedule, base.tokenize
        self.anchor = nn.Parameter(torch.zeros(()))  # the device of the model
        self.calls = []

    def target(self, tokens: torch.Tensor) -> torch.Tensor:
        """``x0*`` (b, c, t, h, w): a smooth pattern whose phase is set by the caption's words."""
        code = (tokens.double() * torch.arange(1, tokens.shape[1] + 1)).sum(1)  # (b,)
        grid = torch.arange(math.prod(self.config.latent_shape), dtype=torch.float64)
        return torch.sin(0.1 * code[:, None] + 0.05 * grid).float().reshape(-1, *self.config.latent_shape)

    def forward(self, x, timesteps, tokens, fps):
        self.calls.append((timesteps.clone(), fps.clone()))
        a = self.schedule.alphas_cumprod[timesteps].reshape(-1, 1, 1, 1, 1).double()
        x0 = self.target(tokens).double()
        eps = (x.double() - a.sqrt() * x0) / (1 - a).sqrt()
        return (a.sqrt() * eps - (1 - a).sqrt() * x0).float()


@pytest.mark.parametrize("t", [500, 990])
def test_first_guess_recovers_what_the_model_predicts(t):
    oracle = OracleT2V()
    guess = first_guess(oracle, [LEFT, RIGHT], t=t, draws=3, seed=7, fps=4)
    expected = oracle.target(oracle.tokenize([LEFT, RIGHT]))
    torch.testing.assert_close(guess, expected, atol=1e-4, rtol=1e-4)
    assert relative_gap(expected[0], expected[1]) > 0.1  # the two captions' answers differ
    assert len(oracle.calls) == 2  # one call per caption, with the step and fps asked for
    assert all(torch.equal(ts, torch.full((3,), t)) and torch.equal(f, torch.full((3,), 4)) for ts, f in oracle.calls)


def test_first_guess_of_a_model_blind_to_words_is_the_same_for_every_caption():
    model = _model_that_ignores_words()
    guess = first_guess(model, [LEFT, RIGHT], t=900, draws=3, seed=7)
    assert relative_gap(guess[0], guess[1]) < 1e-6
    with torch.no_grad():
        model.text_encoder.token_embedding.weight.normal_(0, 1.0)
    guess = first_guess(model, [LEFT, RIGHT], t=900, draws=3, seed=7)
    assert relative_gap(guess[0], guess[1]) > 1e-4
    with pytest.raises(ValueError, match="outside the schedule"):
        first_guess(model, [LEFT], t=1000)


def test_at_t_990_the_toy_schedule_keeps_almost_nothing_of_the_clip():
    """first_guess draws x_t as pure noise: sqrt(alpha_bar_990) = 0.014 on the toy cosine schedule.

    Closed form (Nichol & Dhariwal 2021, eq. 17): alpha_bar_t = f((t+1)/T) / f(0),
    f(tau) = cos^2((tau + s)/(1 + s) * pi/2), s = 0.008, T = 1000.
    """
    f = lambda tau: math.cos((tau + 0.008) / 1.008 * math.pi / 2) ** 2
    closed = math.sqrt(f(991 / 1000) / f(0))
    schedule = TextToVideo.from_preset("tiny").schedule
    assert schedule.alphas_cumprod[990].sqrt().item() == pytest.approx(closed, rel=1e-4)
    assert round(closed, 3) == 0.014


def test_the_shipped_models_first_guess_follows_the_colour():
    """Measured with 16 draws: red vs blue differ by 0.375 in the model's first guess (0.364-0.375 over
    draw seeds 0-3, 0.371 with 64 draws; 0.45 in the data)."""
    model = TextToVideo.load_shipped("toy")
    guess = first_guess(model, [LEFT, "a blue 3 moving left quickly"], draws=16)
    assert relative_gap(guess[0], guess[1]) > 0.33
