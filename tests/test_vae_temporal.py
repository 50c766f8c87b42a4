"""The temporal decoder starts as the per-frame decoder, and its temporal layers really look across frames."""

import pytest
import torch

from vdlearn.models.vae import AutoencoderKL, TemporalResBlock


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    per_frame = AutoencoderKL.from_preset("tiny").eval()
    return per_frame, per_frame.with_temporal_decoder().eval()


def test_fresh_temporal_decoder_equals_the_per_frame_decoder(pair):
    per_frame, temporal = pair
    assert temporal.is_temporal and not per_frame.is_temporal
    assert temporal.num_parameters() > per_frame.num_parameters()
    z = torch.randn(2, 4, 5, 8, 8)  # (b, z, t, h, w)
    with torch.no_grad():
        assert torch.equal(temporal.decode(z), per_frame.decode(z))
        image_latents = torch.randn(2, 4, 8, 8)  # images are one-frame clips
        assert torch.equal(temporal.decode(image_latents), per_frame.decode(image_latents))
    # same key names for the shared parts, so per-frame checkpoints load into it
    shared = {k for k in temporal.state_dict() if not k.startswith("decoder.temporal.")}
    assert shared == set(per_frame.state_dict())


def test_temporal_layers_mix_neighbouring_frames_only_when_trained(pair):
    per_frame, _ = pair
    trained = per_frame.with_temporal_decoder().eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for module in trained.decoder.temporal.modules():
            if isinstance(module, TemporalResBlock):
                module.conv2.weight.normal_(0, 0.05)
    z = torch.randn(1, 4, 6, 8, 8)
    z_changed = z.clone()
    z_changed[:, :, 0] += 1.0  # change the first frame only
    with torch.no_grad():
        a, b = trained.decode(z), trained.decode(z_changed)
        pa, pb = per_frame.decode(z), per_frame.decode(z_changed)
    assert torch.equal(pa[:, :, 1:], pb[:, :, 1:])  # per-frame: other frames untouched
    assert (a[:, :, 1] - b[:, :, 1]).abs().max() > 1e-4  # temporal: the neighbour changes
    # kernel 3 at each of several blocks: influence spreads, but clips stay separate
    two = torch.cat([z, z_changed])
    with torch.no_grad():
        both = trained.decode(two)
    torch.testing.assert_close(both[0:1], a, atol=1e-5, rtol=1e-5)


def test_per_frame_copy_drops_only_the_temporal_layers(pair):
    per_frame, temporal = pair
    back = temporal.per_frame()
    assert not back.is_temporal
    for key, value in per_frame.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)
    with pytest.raises(ValueError, match="already"):
        temporal.with_temporal_decoder()


def test_temporal_decoder_saves_and_loads(tmp_path, pair):
    _, temporal = pair
    loaded = AutoencoderKL.load(temporal.save(tmp_path / "t"))
    assert loaded.is_temporal and loaded.config.temporal_decoder
