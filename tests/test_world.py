"""The toy video world: determinism, shapes, captions, splits, regimes, physics."""

import numpy as np
import pytest
import torch

from vdlearn.data import (
    COLOURS,
    DIRECTIONS,
    OBJECTS,
    SPEEDS,
    ToyImageDataset,
    ToyVideoDataset,
    ToyWorld,
    UnknownWordError,
    WorldConfig,
    parse_caption,
)
from vdlearn.data.glyphs import digit_glyph_count


def test_same_seed_and_index_give_the_same_clip_in_any_batch():
    w = ToyWorld("toy32", seed=7)
    a = w.batch([5, 6, 7], regime="lowq")["video"]
    b = w.batch([7, 1, 6], regime="lowq")["video"]
    assert torch.equal(a[2], b[0]) and torch.equal(a[1], b[2])
    again = ToyWorld("toy32", seed=7).batch([5], regime="lowq")["video"]
    assert torch.equal(a[0], again[0])
    other = ToyWorld("toy32", seed=8).batch([5])["video"]
    assert not torch.equal(w.batch([5])["video"], other)


@pytest.mark.parametrize("preset,shape", [("toy32", (3, 16, 32, 32)), ("toy64", (3, 16, 64, 64)), ("toy32_8f", (3, 8, 32, 32))])
def test_presets_shapes_and_range(preset, shape):
    b = ToyWorld(preset).batch(range(4))
    assert b["video"].shape == (4, *shape)
    assert b["video"].min() >= -1 and b["video"].max() <= 1
    assert b["fps"].dtype == torch.long and b["fps"].shape == (4,)
    im = ToyWorld(preset).images(range(3))["image"]
    assert im.shape == (3, 3, shape[2], shape[3])


def test_captions_describe_the_attributes_and_parse_back():
    b = ToyWorld().batch(range(64))
    a = b["attributes"]
    for i, text in enumerate(b["caption"]):
        c = parse_caption(text)
        assert (c.object, c.colour, c.direction, c.speed) == (
            OBJECTS[a.object[i]], COLOURS[a.colour[i]], DIRECTIONS[a.direction[i]], SPEEDS[a.speed[i]])
    assert parse_caption("The BLUE three goes up fast") == parse_caption("a blue 3 moving up quickly")


def test_unknown_word_is_a_clear_error():
    with pytest.raises(UnknownWordError, match="vocabulary") as e:
        parse_caption("a purple 3 moving left")
    assert "purple" in str(e.value) and "orange" in str(e.value)
    with pytest.raises(ValueError, match="no colour"):
        parse_caption("a 3 moving left")
    with pytest.raises(ValueError, match="two"):
        parse_caption("a red blue 3")


def test_splits_hold_out_object_colour_pairs():
    w = ToyWorld()
    held = set(w.heldout_pairs())
    assert len(held) == len(WorldConfig().heldout) >= 8
    train = w.attributes(range(2000), "train")
    test = w.attributes(range(2000), "test")
    for attrs in (train, test):
        pairs = {(OBJECTS[o], COLOURS[c]) for o, c in zip(attrs.object, attrs.colour)}
        assert not pairs & held
    assert len({(OBJECTS[o], COLOURS[c]) for o, c in zip(train.object, train.colour)}) == 14 * 8 - len(held)
    h = w.attributes(range(500), "heldout")
    assert {(OBJECTS[o], COLOURS[c]) for o, c in zip(h.object, h.colour)} == held
    # train and test are different clips
    assert not torch.equal(w.batch(range(4), "train")["video"], w.batch(range(4), "test")["video"])


def test_image_only_concept_never_moves():
    w = ToyWorld()
    star = OBJECTS.index("star")
    assert star not in set(w.attributes(range(3000), "train").object)
    imgs = w.attributes(range(1000), "train", image=True)
    assert 0.1 < np.mean(imgs.object == star) < 0.3
    assert (imgs.direction == -1).all()


def test_digits_are_real_handwriting():
    counts = digit_glyph_count()
    assert sum(counts.values()) == 1797 and min(counts.values()) > 170
    a = ToyWorld().attributes(range(500))
    digits = a.glyph[a.glyph >= 0]
    assert len(set(digits.tolist())) > 200  # many different handwritten samples


def test_motion_physics():
    w = ToyWorld("toy32_fps")
    a = w.attributes(range(400))
    traj = w.trajectory(a, w.config.frames)  # (b, t, 2)
    s = w.config.sprite
    assert traj.min() >= s / 2 - 1e-4 and traj.max() <= w.config.size - s / 2 + 1e-4  # bounces stay inside
    steps = traj[:, 1:] - traj[:, :-1]
    early = steps[:, : w.config.frames // 4 + 2]  # the steps the tracker reads direction from
    v = torch.from_numpy(a.velocity).float()
    free = ((early - v[:, None]).abs() < 1e-4).all(-1).float().mean(1)  # (b,) share of wall-free steps
    assert free.min() > 0.6  # most early steps move as captioned, even at 4 fps
    assert (free[torch.from_numpy(a.fps) >= 8] == 1).all()  # at 8 fps and above, none hits a wall
    speed = steps.norm(dim=-1).max(1).values * torch.from_numpy(a.fps).float()
    want = torch.tensor([w.config.speeds_px_per_s[s] for s in a.speed], dtype=torch.float32)
    assert torch.allclose(speed, want, rtol=1e-4)  # px/s is the same at every fps


def test_low_quality_regime_is_the_clean_clip_degraded():
    w = ToyWorld()
    clean = w.batch(range(8))["video"]
    lowq = w.batch(range(8), regime="lowq")["video"]
    assert clean.shape == lowq.shape
    assert (clean - lowq).abs().mean() > 0.05
    # still the same content: correlation of the two clips stays high
    c = torch.stack([torch.corrcoef(torch.stack([x.flatten(), y.flatten()]))[0, 1] for x, y in zip(clean, lowq)])
    assert c.min() > 0.5


def test_bad_arguments_are_explained():
    w = ToyWorld()
    with pytest.raises(ValueError, match="split"):
        w.batch([0], split="validation")
    with pytest.raises(ValueError, match="regime"):
        w.batch([0], regime="image")
    with pytest.raises(ValueError, match="No clip indices"):
        w.batch([])
    with pytest.raises(ValueError, match="non-negative"):
        w.batch([-1])
    with pytest.raises(KeyError, match="toy32"):
        WorldConfig.preset("huge")
    with pytest.raises(ValueError, match="multiple of 8"):
        WorldConfig(size=30)


def test_torch_datasets_batch_through_a_dataloader():
    w = ToyWorld("toy32_8f")
    loader = torch.utils.data.DataLoader(ToyVideoDataset(w, length=20), batch_size=8)
    batch = next(iter(loader))
    assert batch["video"].shape == (8, 3, 8, 32, 32) and len(batch["caption"]) == 8
    assert torch.equal(batch["video"][3], w.clip(3)["video"])
    images = next(iter(torch.utils.data.DataLoader(ToyImageDataset(w, length=10), batch_size=5)))
    assert images["image"].shape == (5, 3, 32, 32)
    with pytest.raises(IndexError):
        ToyVideoDataset(w, length=5)[5]


def test_from_caption_renders_exactly_the_prompt():
    w = ToyWorld()
    b = w.from_caption("an orange 7 moving down quickly", indices=range(6), fps=8)
    assert b["caption"] == ["an orange 7 moving down quickly"] * 6
    assert b["video"].shape == (6, 3, 16, 32, 32)
    assert len({tuple(x.flatten()[:50].tolist()) for x in b["video"]}) == 6  # different handwriting/positions
    img = w.from_caption("a white star", indices=range(2))
    assert img["image"].shape == (2, 3, 32, 32) and img["caption"] == ["a white star"] * 2
    with pytest.raises(UnknownWordError):
        w.from_caption("a red 3 moving sideways")
