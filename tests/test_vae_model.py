"""The autoencoder's pieces: shapes, per-frame application, posterior maths, input checks, files."""

import math

import pytest
import torch

from vdlearn.io import CheckpointMismatchError, save_checkpoint
from vdlearn.models.vae import AutoencoderKL, DiagonalGaussian, VAEConfig


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    return AutoencoderKL.from_preset("toy32").eval()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return AutoencoderKL.from_preset("tiny").eval()


def test_presets_are_data_with_the_documented_shapes():
    sd = VAEConfig.preset("sd")
    assert sd == VAEConfig.preset("videocrafter").replace(name="sd")
    assert (sd.base_channels, sd.channel_mult, sd.num_res_blocks, sd.z_channels) == (128, (1, 2, 4, 4), 2, 4)
    assert (sd.double_z, sd.norm_eps, sd.scale_factor, sd.downsample_factor) == (True, 1e-6, 0.18215, 8)
    toy = VAEConfig.preset("toy32")
    assert toy.downsample_factor == 4 and toy.latent_shape(32, 32) == (4, 8, 8)
    assert VAEConfig.preset("toy64").latent_shape(64, 64) == (4, 16, 16)
    assert VAEConfig.from_dict(toy.to_dict()) == toy


def test_toy_preset_size_is_small(toy):
    assert 3e5 <= toy.num_parameters() <= 2e6


def test_config_errors_are_explicit():
    with pytest.raises(KeyError, match="toy32"):
        VAEConfig.preset("nope")
    with pytest.raises(ValueError, match="norm_groups"):
        VAEConfig(base_channels=24, norm_groups=32)
    with pytest.raises(ValueError, match="Unknown VAEConfig fields"):
        VAEConfig.from_dict({"bogus": 1})


def test_video_shapes_round_trip(toy):
    video = torch.rand(2, 3, 5, 32, 32) * 2 - 1  # (b, c, t, h, w)
    with torch.no_grad():
        post = toy.encode(video)
        assert post.mean.shape == (2, 4, 5, 8, 8) and post.logvar.shape == (2, 4, 5, 8, 8)
        assert toy.decode(post.mode()).shape == video.shape
        image = toy.decode(toy.encode(video[:, :, 0]).mode())
        assert image.shape == (2, 3, 32, 32)


def test_video_is_encoded_and_decoded_frame_by_frame(tiny):
    video = torch.rand(2, 3, 4, 16, 16) * 2 - 1
    with torch.no_grad():
        post = tiny.encode(video)
        for t in range(4):
            single = tiny.encode(video[:, :, t])
            torch.testing.assert_close(post.mean[:, :, t], single.mean, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(post.logvar[:, :, t], single.logvar, atol=1e-5, rtol=1e-5)
        z = post.mode()
        out = tiny.decode(z)
        torch.testing.assert_close(out[:, :, 2], tiny.decode(z[:, :, 2]), atol=1e-5, rtol=1e-5)
        # chunking frames only saves memory
        torch.testing.assert_close(tiny.encode(video, frame_chunk=3).mean, post.mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tiny.decode(z, frame_chunk=3), out, atol=1e-5, rtol=1e-5)


def test_scaled_latents(tiny):
    video = torch.rand(1, 3, 2, 16, 16) * 2 - 1
    vae = AutoencoderKL(tiny.config.replace(scale_factor=0.5))
    vae.load_state_dict(tiny.state_dict())
    with torch.no_grad():
        lat = vae.encode_latents(video)
        torch.testing.assert_close(lat, 0.5 * vae.encode(video).mode())
        torch.testing.assert_close(vae.decode_latents(lat), vae.decode(vae.encode(video).mode()))


def test_kl_matches_torch_distributions():
    torch.manual_seed(1)
    moments = torch.randn(3, 8, 2, 4, 4)  # (b, 2z, t, h, w)
    post = DiagonalGaussian(moments)
    mean, logvar = moments.chunk(2, dim=1)
    q = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    torch.testing.assert_close(post.kl(), expected)
    other = DiagonalGaussian(torch.randn(3, 8, 2, 4, 4))
    q2 = torch.distributions.Normal(other.mean, other.std)
    torch.testing.assert_close(post.kl(other), torch.distributions.kl_divergence(q, q2).flatten(1).sum(1))
    torch.testing.assert_close(post.nll(mean), -q.log_prob(mean).flatten(1).sum(1))
    assert torch.all(DiagonalGaussian(torch.cat([mean, torch.zeros_like(mean)], 1)).kl(
        DiagonalGaussian(torch.cat([mean, torch.zeros_like(mean)], 1))).abs() < 1e-6)


def test_posterior_sampling_is_reparameterised_and_seeded():
    moments = torch.cat([torch.full((1, 2, 64, 64), 3.0), torch.full((1, 2, 64, 64), math.log(0.25))], 1)
    post = DiagonalGaussian(moments)
    a = post.sample(torch.Generator().manual_seed(0))
    b = post.sample(torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert abs(a.mean().item() - 3.0) < 0.02 and abs(a.std().item() - 0.5) < 0.02
    assert torch.equal(post.mode(), post.mean)
    clamped = DiagonalGaussian(torch.cat([torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 100.0)], 1))
    assert clamped.logvar.max().item() == 20.0  # the original code's clamp
    det = DiagonalGaussian(torch.ones(1, 4, 2, 2), deterministic=True)
    assert torch.equal(det.sample(), det.mean) and det.kl().item() == 0.0


def test_bad_inputs_give_clear_errors(toy, tiny):
    with pytest.raises(ValueError, match="expects 32x32 frames, got 64x64"):
        toy.encode(torch.zeros(1, 3, 2, 64, 64))
    with pytest.raises(ValueError, match="channels-first"):
        toy.encode(torch.zeros(1, 2, 32, 32, 3))
    with pytest.raises(ValueError, match="multiple of the downsampling factor"):
        tiny.encode(torch.zeros(1, 3, 15, 16))
    with pytest.raises(TypeError, match="float"):
        toy.encode(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        toy.encode(torch.full((1, 3, 32, 32), 255.0))
    with pytest.raises(ValueError, match="latents"):
        toy.decode(torch.zeros(1, 3, 8, 8))


def test_save_and_load_round_trip(tmp_path, tiny):
    path = tiny.save(tmp_path / "vae", metrics={"psnr": 1.0}, command="test")
    loaded = AutoencoderKL.load(path)
    assert loaded.config == tiny.config and loaded.meta["metrics"]["psnr"] == 1.0
    x = torch.rand(1, 3, 2, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, sample=False)[0], tiny(x, sample=False)[0])


def test_loading_a_wrong_or_truncated_checkpoint_fails_with_the_keys(tmp_path, tiny):
    state = tiny.state_dict()
    meta = {"kind": "vdlearn.vae", "config": tiny.config.to_dict()}
    truncated = {k: v for k, v in state.items() if not k.startswith("decoder.up.1")}
    save_checkpoint(tmp_path / "trunc", truncated, meta)
    with pytest.raises(CheckpointMismatchError, match=r"missing keys[\s\S]*decoder\.up\.1"):
        AutoencoderKL.load(tmp_path / "trunc.safetensors")
    save_checkpoint(tmp_path / "other", state, {"kind": "vdlearn.unet", "config": {}})
    with pytest.raises(CheckpointMismatchError, match="not a vdlearn VAE checkpoint"):
        AutoencoderKL.load(tmp_path / "other.safetensors")
