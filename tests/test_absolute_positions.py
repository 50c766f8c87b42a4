"""Absolute frame positions (AnimateDiff's sinusoid) in temporal attention, against diffusers."""

import torch

from vdlearn.models.unet import Attention, UNetConfig, VideoUNet
from vdlearn.models.unet.positions import sinusoidal_positions


def test_the_sinusoid_equals_diffusers_animatediff_encoding():
    from diffusers.models.embeddings import SinusoidalPositionalEmbedding

    ref = SinusoidalPositionalEmbedding(48, max_seq_length=32)
    x = torch.zeros(1, 16, 48)
    assert torch.allclose(sinusoidal_positions(16, 48), ref(x)[0], atol=1e-6)


def test_absolute_attention_is_plain_attention_on_x_plus_pe():
    torch.manual_seed(0)
    absolute = Attention(32, None, heads=2, dim_head=16, position="absolute")
    plain = Attention(32, None, heads=2, dim_head=16)
    plain.load_state_dict(absolute.state_dict())  # no extra parameters: the sinusoid is fixed
    assert set(absolute.state_dict()) == set(plain.state_dict())
    x = torch.randn(3, 8, 32)  # (b*h*w, frames, channels)
    assert torch.allclose(absolute(x), plain(x + sinusoidal_positions(8, 32)), atol=1e-6)


def test_absolute_positions_tell_frames_apart():
    """Without positions temporal attention is permutation-equivariant; with the sinusoid it is not,
    and even identical frames get different outputs."""
    torch.manual_seed(0)
    attn = Attention(32, None, heads=2, dim_head=16, position="absolute")
    none = Attention(32, None, heads=2, dim_head=16)
    none.load_state_dict(attn.state_dict())
    x = torch.randn(2, 8, 32)
    perm = torch.randperm(8)
    assert torch.allclose(none(x[:, perm]), none(x)[:, perm], atol=1e-5)
    assert (attn(x[:, perm]) - attn(x)[:, perm]).abs().max() > 1e-2
    same = torch.randn(1, 1, 32).expand(1, 8, 32)  # eight copies of one frame
    assert (none(same)[0, 0] - none(same)[0, 7]).abs().max() < 1e-6  # no positions: all frames alike
    out = attn(same)
    assert (out[0, 0] - out[0, 7]).abs().max() > 1e-3  # measured 4e-3 at this random initialisation


def test_a_video_unet_with_absolute_positions_runs_and_uses_them():
    cfg = UNetConfig.preset("toy", model_channels=16, context_dim=32, head_channels=8, init_attention_heads=2,
                            temporal_position="absolute", temporal_conv=False)
    torch.manual_seed(0)
    unet = VideoUNet(cfg).eval()
    with torch.no_grad():
        for p in unet.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(0, 0.05)  # zero-initialised outputs would hide the temporal layers
        x = torch.randn(1, 4, 1, 8, 8).expand(1, 4, 6, 8, 8).contiguous()  # six identical frames
        out = unet(x, torch.tensor([500]), torch.randn(1, 5, 32), fps=8)
    assert out.shape == x.shape
    assert (out[:, :, 0] - out[:, :, 5]).abs().max() > 1e-3  # the frames know where they are
